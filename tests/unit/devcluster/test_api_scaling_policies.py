"""devcluster /v1/scaling/policies and /v1/scaling/policy/:id in-process (ASGI, real store).

What an autoscaler relies on: one policy per group with a `scaling` block, stable IDs across job
updates, ModifyIndex moving only when the policy changes, stopped jobs' policies disabled, purged
jobs' policies gone, `?job=`/`?type=`/`?namespace=` filters, ACL, and blocking queries that wake
on a policy change but not on unrelated job writes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from nomad_triton.devcluster.store import Store
from tests.unit.devcluster.asgi import HCL, Client, parsed_job, run

STUB_KEYS = {"ID", "Enabled", "Type", "Target", "CreateIndex", "ModifyIndex"}


async def _register(c: Client, job: dict[str, Any], ns: str | None = None) -> dict[str, Any]:
    url = "/v1/jobs" + (f"?namespace={ns}" if ns else "")
    r = await c.post(url, json={"Job": job})
    assert r.status_code == 200, r.text
    return r.json()


def test_policy_follows_job_lifecycle() -> None:
    async def t(c: Client, store: Store) -> None:
        empty = await c.get("/v1/scaling/policies")
        assert empty.status_code == 200 and empty.json() == []
        job = await parsed_job(c)
        reg = await _register(c, job)
        r = await c.get("/v1/scaling/policies")
        [stub] = r.json()
        assert set(stub) == STUB_KEYS
        assert (stub["Enabled"], stub["Type"]) == (True, "horizontal")
        assert stub["Target"] == {"Namespace": "default", "Job": "web", "Group": "api"}
        assert stub["CreateIndex"] == stub["ModifyIndex"] == reg["JobModifyIndex"]
        assert int(r.headers["X-Nomad-Index"]) == reg["JobModifyIndex"]

        full = await c.get(f"/v1/scaling/policy/{stub['ID']}")
        assert full.status_code == 200
        pol = full.json()
        assert (pol["Min"], pol["Max"], pol["Namespace"], pol["ID"]) == (1, 4, "default", stub["ID"])
        assert int(full.headers["X-Nomad-Index"]) == pol["ModifyIndex"]

        # A job change that leaves the scaling block alone keeps the policy as it is.
        job["Meta"] = {"rev": "2"}
        await _register(c, job)
        [same] = (await c.get("/v1/scaling/policies")).json()
        assert same == stub

        # Changing the policy keeps its ID and CreateIndex and moves ModifyIndex.
        job["TaskGroups"][0]["Scaling"]["Max"] = 6
        changed = await _register(c, job)
        [moved] = (await c.get("/v1/scaling/policies")).json()
        assert (moved["ID"], moved["CreateIndex"]) == (stub["ID"], stub["CreateIndex"])
        assert moved["ModifyIndex"] == changed["JobModifyIndex"] > stub["ModifyIndex"]
        assert (await c.get(f"/v1/scaling/policy/{stub['ID']}")).json()["Max"] == 6

        # Stopping the job disables its policy (Nomad 1.10.2+); purging removes it.
        await c.delete("/v1/job/web")
        [off] = (await c.get("/v1/scaling/policies")).json()
        assert off["Enabled"] is False and off["ID"] == stub["ID"] and off["ModifyIndex"] > moved["ModifyIndex"]
        await c.delete("/v1/job/web?purge=true")
        gone = await c.get("/v1/scaling/policies")
        assert gone.json() == [] and int(gone.headers["X-Nomad-Index"]) > off["ModifyIndex"]
        missing = await c.get(f"/v1/scaling/policy/{stub['ID']}")
        assert (missing.status_code, missing.text) == (404, "policy not found")

        # Re-registered after the purge: a new policy, with a new ID.
        await _register(c, job)
        [fresh] = (await c.get("/v1/scaling/policies")).json()
        assert fresh["ID"] != stub["ID"] and fresh["Enabled"] is True

    run(t)


def test_filters_by_job_type_and_namespace() -> None:
    async def t(c: Client, store: Store) -> None:
        web = await parsed_job(c)
        await _register(c, web)
        other = await parsed_job(c)
        other["ID"] = other["Name"] = "other"
        await _register(c, other)
        no_scaling = await parsed_job(c)
        no_scaling["ID"] = no_scaling["Name"] = "plain"
        no_scaling["TaskGroups"][0]["Scaling"] = None
        await _register(c, no_scaling)
        in_team = await parsed_job(c)
        in_team["Namespace"] = "team"
        await _register(c, in_team)

        def jobs(resp: Any) -> list[tuple[str, str]]:
            return sorted((p["Target"]["Namespace"], p["Target"]["Job"]) for p in resp.json())

        assert jobs(await c.get("/v1/scaling/policies")) == [("default", "other"), ("default", "web")]
        assert jobs(await c.get("/v1/scaling/policies?job=web")) == [("default", "web")]
        assert jobs(await c.get("/v1/scaling/policies?job=plain")) == []
        assert jobs(await c.get("/v1/scaling/policies?type=horizontal")) == [("default", "other"),
                                                                              ("default", "web")]
        assert jobs(await c.get("/v1/scaling/policies?type=horiz")) == [("default", "other"), ("default", "web")]
        assert jobs(await c.get("/v1/scaling/policies?type=vertical")) == []
        assert jobs(await c.get("/v1/scaling/policies?namespace=team")) == [("team", "web")]
        assert jobs(await c.get("/v1/scaling/policies?namespace=*")) == [
            ("default", "other"), ("default", "web"), ("team", "web")]
        [team] = (await c.get("/v1/scaling/policies?namespace=team")).json()
        # A policy is read in its own namespace, as every namespaced Nomad object is.
        assert (await c.get(f"/v1/scaling/policy/{team['ID']}")).status_code == 404
        assert (await c.get(f"/v1/scaling/policy/{team['ID']}?namespace=team")).json()["Target"]["Job"] == "web"

    run(t, {"server": {"namespaces": ["team"]}})


def test_blocking_list_wakes_on_policy_change_only() -> None:
    async def t(c: Client, store: Store) -> None:
        job = await parsed_job(c)
        await _register(c, job)
        r = await c.get("/v1/scaling/policies")
        index = int(r.headers["X-Nomad-Index"])

        # An unrelated job write does not end the wait.
        job["Meta"] = {"rev": "2"}
        await _register(c, job)
        t0 = time.monotonic()
        r = await c.get(f"/v1/scaling/policies?index={index}&wait=300ms")
        assert time.monotonic() - t0 >= 0.29 and int(r.headers["X-Nomad-Index"]) == index

        async def change_later() -> float:
            await asyncio.sleep(0.3)
            job["TaskGroups"][0]["Scaling"]["Enabled"] = False
            await _register(c, job)
            return time.monotonic()

        writer = asyncio.create_task(change_later())
        r = await c.get(f"/v1/scaling/policies?index={index}&wait=5s")
        done = time.monotonic()
        changed_at = await writer
        assert done - changed_at < 0.2 and int(r.headers["X-Nomad-Index"]) > index
        assert [p["Enabled"] for p in r.json()] == [False]

        # The single read blocks on the policy's own ModifyIndex.
        pid = r.json()[0]["ID"]
        one = await c.get(f"/v1/scaling/policy/{pid}")
        t0 = time.monotonic()
        again = await c.get(f"/v1/scaling/policy/{pid}?index={one.headers['X-Nomad-Index']}&wait=200ms")
        assert time.monotonic() - t0 >= 0.19 and again.json() == one.json()

    run(t)


def test_acl_list_and_read_capabilities() -> None:
    cfg = {"server": {"acl": True, "namespaces": ["team"]},
           "acl": {"policies": {
               "ro": {"namespace": {"default": {"policy": "read"}}},
               "lister": {"namespace": {"team": {"capabilities": ["list-scaling-policies"]}}}},
               "tokens": [{"name": "ro", "policies": ["ro"]}]}}

    async def t(c: Client, store: Store) -> None:
        store.upsert("acl_tokens", "a1", {"AccessorID": "a1", "SecretID": "s-ro", "Type": "client",
                                          "Policies": ["ro"], "Name": "ro"})
        store.upsert("acl_tokens", "a2", {"AccessorID": "a2", "SecretID": "s-mgmt", "Type": "management",
                                          "Policies": None, "Name": "boot"})
        store.upsert("acl_tokens", "a3", {"AccessorID": "a3", "SecretID": "s-team", "Type": "client",
                                          "Policies": ["lister"], "Name": "team"})
        mgmt = {"X-Nomad-Token": "s-mgmt"}
        job = (await c.post("/v1/jobs/parse", json={"JobHCL": HCL}, headers=mgmt)).json()
        assert (await c.post("/v1/jobs", json={"Job": job}, headers=mgmt)).status_code == 200
        assert (await c.post("/v1/jobs?namespace=team", json={"Job": job}, headers=mgmt)).status_code == 200
        assert (await c.get("/v1/scaling/policies")).status_code == 403
        ro = {"X-Nomad-Token": "s-ro"}
        [pol] = (await c.get("/v1/scaling/policies", headers=ro)).json()
        assert (await c.get(f"/v1/scaling/policy/{pol['ID']}", headers=ro)).status_code == 200
        assert (await c.get("/v1/scaling/policies?namespace=team", headers=ro)).status_code == 403
        # `namespace=*` lists only the namespaces the token may list.
        every = (await c.get("/v1/scaling/policies?namespace=*", headers=ro)).json()
        assert [p["Target"]["Namespace"] for p in every] == ["default"]
        team = {"X-Nomad-Token": "s-team"}
        [tp] = (await c.get("/v1/scaling/policies?namespace=team", headers=team)).json()
        denied = await c.get(f"/v1/scaling/policy/{tp['ID']}?namespace=team", headers=team)
        assert (denied.status_code, denied.text) == (403, "Permission denied")

    run(t, cfg)
