"""nomad-triton sd's pure parts: registrations -> http_sd JSON with nomad_sd's labels, the catalogue's
blocking-query bookkeeping (a fake client: pure logic), and the ASGI app's answers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from nomad_triton.observe.sd import ServiceCatalogue, sd_app, target_groups, target_labels

ALLOC = "0b8e6d90-ebd8-10db-08a7-44c3a79550bb"
REG = {"ID": f"_nomad-task-{ALLOC}-group-triton-triton-cpu-metrics-metrics", "ServiceName": "triton-cpu-metrics",
       "Namespace": "default", "NodeID": "node-1", "Datacenter": "dc1", "JobID": "triton-cpu", "AllocID": ALLOC,
       "Tags": ["triton", "metrics", "prometheus", "job=triton-cpu", "pool=default", "group=triton"],
       "Address": "127.0.0.1", "Port": 23795}
WEB = {**REG, "ID": "_nomad-task-x-web", "ServiceName": "web", "Tags": ["http"], "Port": 8080}


def test_labels_are_the_ones_prometheus_nomad_sd_gives() -> None:
    labels = target_labels(REG)
    assert labels == {
        "__meta_nomad_address": "127.0.0.1", "__meta_nomad_dc": "dc1", "__meta_nomad_node_id": "node-1",
        "__meta_nomad_namespace": "default", "__meta_nomad_service_address": "127.0.0.1",
        "__meta_nomad_service_id": REG["ID"], "__meta_nomad_service_port": "23795",
        "__meta_nomad_service": "triton-cpu-metrics",
        "__meta_nomad_tags": ",triton,metrics,prometheus,job=triton-cpu,pool=default,group=triton,",
    }
    assert "__meta_nomad_tags" not in target_labels({**REG, "Tags": []})


def test_target_groups_one_per_registration_with_optional_tag_filter() -> None:
    groups = target_groups([WEB, REG])
    assert [g["targets"] for g in groups] == [["127.0.0.1:23795"], ["127.0.0.1:8080"]]
    assert [g["targets"] for g in target_groups([WEB, REG], ("prometheus",))] == [["127.0.0.1:23795"]]
    assert target_groups([{**REG, "Address": "::1"}])[0]["targets"] == ["[::1]:23795"]


class FakeCatalogue:
    """Answers /v1/services and /v1/service/:name like Nomad, counting blocking waits."""

    def __init__(self) -> None:
        self.index = 5
        self.regs = [REG]
        self.calls: list[tuple[str, int]] = []
        self.fail = False

    def blocking_get(self, path: str, index: int = 0, wait_s: float = 30.0,
                     params: dict[str, Any] | None = None) -> tuple[Any, int]:
        self.calls.append((path, index))
        if self.fail:
            raise ConnectionError("Nomad unreachable at http://127.0.0.1:4646")
        if path == "services":
            names = sorted({r["ServiceName"] for r in self.regs})
            return [{"Namespace": "default", "Services": [{"ServiceName": n} for n in names]}], self.index
        name = path.split("/", 1)[1]
        return [r for r in self.regs if r["ServiceName"] == name], self.index


def test_catalogue_rereads_services_only_when_the_index_moves() -> None:
    fake = FakeCatalogue()
    cat = ServiceCatalogue(fake, wait_s=1)
    assert cat.refresh(0) == 5 and cat.snapshot().registrations == [REG]
    fake.calls.clear()
    assert cat.refresh(5) == 5  # the wait ended without a change: no per-service reads
    assert fake.calls == [("services", 5)]
    fake.regs, fake.index = [REG, WEB], 9
    assert cat.refresh(5) == 9
    assert sorted(r["ServiceName"] for r in cat.snapshot().registrations) == ["triton-cpu-metrics", "web"]


class AppClient:
    """Synchronous GETs against the ASGI app in-process (httpx's ASGI transport, no socket)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://sd") as c:
                return await c.get(path, params=params)

        return asyncio.run(go())


def test_app_serves_targets_and_keeps_the_last_good_snapshot_when_nomad_fails() -> None:
    fake = FakeCatalogue()
    cat = ServiceCatalogue(fake, wait_s=1, retry_s=0.05)
    client = AppClient(sd_app(cat))
    assert client.get("/v1/targets").status_code == 503  # not read yet: never an empty list
    cat.follow()
    cat.wait_ready(5)
    r = client.get("/v1/targets", params={"tag": "prometheus"})
    assert r.status_code == 200 and r.json() == target_groups([REG])
    assert client.get("/healthz").text.startswith("ok: 1 registrations")
    fake.fail = True
    fake.index = 6  # make the follower's blocking call return and fail
    import time

    deadline = time.monotonic() + 5
    while cat.snapshot().error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    cat.close()
    health = client.get("/healthz")
    assert health.status_code == 503 and "nomad not answering" in health.text
    assert client.get("/v1/targets").json() == target_groups([REG])  # Prometheus keeps scraping what it knew
