"""/v1/evaluation/:id/allocations, /v1/allocation/:id/services, /v1/client/allocation/:id/checks
in-process (ASGI, real store, no runtime): shapes, filters and not-found answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from nomad_triton.devcluster.store import Store
from tests.unit.devcluster import asgi
from tests.unit.devcluster.asgi import Client

TEAM = {"server": {"namespaces": ["team"]}}


def run(test: Callable[[Client, Store], Awaitable[None]]) -> None:
    asgi.run(test, TEAM)


def _alloc(alloc_id: str, eval_id: str, ns: str = "default") -> dict[str, Any]:
    return {"ID": alloc_id, "EvalID": eval_id, "Namespace": ns, "JobID": "web", "TaskGroup": "g",
            "Name": "web.g[0]", "ClientStatus": "running", "DesiredStatus": "run",
            "Job": {"ID": "web", "Type": "service", "Version": 0},
            "AllocatedResources": {"Shared": {"Ports": [{"Label": "http", "Value": 23000}]}}}


def test_eval_allocations_are_stubs_of_that_eval_in_the_namespace() -> None:
    async def t(c: Client, store: Store) -> None:
        store.upsert("allocs", "a1", _alloc("a1", "e1"))
        store.upsert("allocs", "a2", _alloc("a2", "e2"))
        store.upsert("allocs", "a3", _alloc("a3", "e1", ns="team"))
        r = await c.get("/v1/evaluation/e1/allocations")
        assert r.status_code == 200 and int(r.headers["X-Nomad-Index"]) >= 1
        [stub] = r.json()
        assert (stub["ID"], stub["EvalID"], stub["JobType"], stub["JobVersion"]) == ("a1", "e1", "service", 0)
        assert "AllocatedResources" not in stub and "Job" not in stub  # a stub, as Nomad lists them
        assert [s["ID"] for s in (await c.get("/v1/evaluation/e1/allocations?namespace=team")).json()] == ["a3"]
        assert (await c.get("/v1/evaluation/nope/allocations")).json() == []

    run(t)


def test_alloc_services_and_checks() -> None:
    async def t(c: Client, store: Store) -> None:
        store.upsert("allocs", "a1", _alloc("a1", "e1"))
        store.upsert("services", "s1", {"ID": "s1", "ServiceName": "web-http", "AllocID": "a1",
                                        "Namespace": "default", "Port": 23000, "Address": "127.0.0.1"})
        store.upsert("services", "s2", {"ID": "s2", "ServiceName": "web-http", "AllocID": "other",
                                        "Namespace": "default", "Port": 23001, "Address": "127.0.0.1"})
        assert [s["ID"] for s in (await c.get("/v1/allocation/a1/services")).json()] == ["s1"]
        assert (await c.get("/v1/allocation/none/services")).json() == []
        r = await c.get("/v1/client/allocation/none/checks")
        assert (r.status_code, r.text) == (404, 'Unknown allocation "none"')
        # No runtime in this test: a known allocation simply has no check results yet.
        assert (await c.get("/v1/client/allocation/a1/checks")).json() == {}

    run(t)
