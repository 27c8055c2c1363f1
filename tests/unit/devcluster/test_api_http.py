"""devcluster API handlers in-process (ASGI, real store, no runtime): Nomad shapes and error texts.

Runtime-dependent behaviour (placement, health, deployments) is covered by tests/e2e.
"""

from __future__ import annotations

import asyncio
import time

from nomad_triton.devcluster.api.events import event_matches, parse_topics
from nomad_triton.devcluster.store import Event, Store
from tests.unit.devcluster.asgi import HCL, Client, parsed_job, run


def test_register_creates_pending_eval_and_versions() -> None:
    async def t(c: Client, store: Store) -> None:
        job = await parsed_job(c)
        r = await c.post("/v1/jobs", json={"Job": job})
        assert r.status_code == 200
        out = r.json()
        assert out["EvalCreateIndex"] == out["JobModifyIndex"] == out["Index"]
        ev = (await c.get(f"/v1/evaluation/{out['EvalID']}")).json()
        assert (ev["Status"], ev["TriggeredBy"], ev["JobID"]) == ("pending", "job-register", "web")
        stored = (await c.get("/v1/job/web")).json()
        assert (stored["Version"], stored["Status"], stored["Stable"]) == (0, "pending", False)
        # Same spec again: no new version, same JobModifyIndex; changed spec: version 1.
        again = (await c.post("/v1/jobs", json={"Job": job})).json()
        assert again["JobModifyIndex"] == out["JobModifyIndex"]
        job["TaskGroups"][0]["Count"] = 3
        changed = (await c.post("/v1/jobs", json={"Job": job})).json()
        assert changed["JobModifyIndex"] > out["JobModifyIndex"]
        versions = (await c.get("/v1/job/web/versions")).json()["Versions"]
        assert [v["Version"] for v in versions] == [1, 0]
        stubs = (await c.get("/v1/jobs")).json()
        assert [s["ID"] for s in stubs] == ["web"] and "JobSummary" in stubs[0]
        assert (await c.get("/v1/jobs?prefix=zz")).json() == []

    run(t)


def test_enforce_index_conflicts_use_nomads_text() -> None:
    async def t(c: Client, store: Store) -> None:
        job = await parsed_job(c)
        r = await c.post("/v1/jobs", json={"Job": job, "EnforceIndex": True, "JobModifyIndex": 7})
        assert r.status_code == 500 and r.text == "Enforcing job modify index 7: job does not exist"
        ok = await c.post("/v1/jobs", json={"Job": job, "EnforceIndex": True, "JobModifyIndex": 0})
        assert ok.status_code == 200
        jmi = ok.json()["JobModifyIndex"]
        r = await c.post("/v1/jobs", json={"Job": job, "EnforceIndex": True, "JobModifyIndex": 0})
        assert r.text == "Enforcing job modify index 0: job already exists"
        r = await c.post("/v1/jobs", json={"Job": job, "EnforceIndex": True, "JobModifyIndex": jmi + 1})
        assert r.text == (f"Enforcing job modify index {jmi + 1}: job exists with conflicting job modify "
                          f"index: {jmi}")
        r = await c.post("/v1/jobs", json={"Job": job, "EnforceIndex": True, "JobModifyIndex": jmi})
        assert r.status_code == 200

    run(t)


def test_bad_input_and_not_found() -> None:
    async def t(c: Client, store: Store) -> None:
        r = await c.post("/v1/jobs", content=b"{nope")
        assert r.status_code == 400 and r.text.startswith("Failed to decode request body")
        assert (await c.post("/v1/jobs", json={})).text == "Job must be specified"
        r = await c.get("/v1/job/missing")
        assert (r.status_code, r.text) == (404, "job not found")
        assert (await c.delete("/v1/jobs")).status_code == 405
        r = await c.post("/v1/jobs/parse", json={"JobHCL": "job {"})
        assert r.status_code == 400
        job = await parsed_job(c)
        job["Namespace"] = "nope"
        r = await c.post("/v1/jobs", json={"Job": job})
        assert (r.status_code, r.text) == (400, 'namespace "nope" does not exist')

    run(t)


def test_preserve_counts_and_stop_purge() -> None:
    async def t(c: Client, store: Store) -> None:
        job = await parsed_job(c)
        await c.post("/v1/jobs", json={"Job": job})
        job["TaskGroups"][0]["Count"] = 4
        job["Meta"] = {"rev": "2"}
        await c.post("/v1/jobs", json={"Job": job, "PreserveCounts": True})
        assert (await c.get("/v1/job/web")).json()["TaskGroups"][0]["Count"] == 2
        stop = (await c.delete("/v1/job/web")).json()
        stopped = (await c.get("/v1/job/web")).json()
        assert stopped["Stop"] is True and stop["EvalID"]
        ev = (await c.get(f"/v1/evaluation/{stop['EvalID']}")).json()
        assert ev["TriggeredBy"] == "job-deregister"
        await c.delete("/v1/job/web?purge=true")
        assert (await c.get("/v1/job/web")).status_code == 404
        assert (await c.get("/v1/job/web/versions")).status_code == 404

    run(t)


def test_scale_bounds_record_only_events_and_active_deployment() -> None:
    async def t(c: Client, store: Store) -> None:
        job = await parsed_job(c)
        await c.post("/v1/jobs", json={"Job": job})
        r = await c.post("/v1/job/web/scale", json={"Count": 9, "Target": {"Group": "api"}})
        assert (r.status_code, r.text) == (400, "group count was greater than scaling policy maximum: 9 > 4")
        r = await c.post("/v1/job/web/scale", json={"Count": 0, "Target": {"Group": "api"}})
        assert r.text == "group count was less than scaling policy minimum: 0 < 1"
        r = await c.post("/v1/job/web/scale", json={"Count": 1, "Target": {"Group": "nope"}})
        assert r.status_code == 400
        r = await c.post("/v1/job/web/scale", json={"Target": {"Group": "api"}, "Message": "dry run"})
        assert r.status_code == 200 and r.json()["EvalID"] == ""
        r = await c.post("/v1/job/web/scale", json={"Count": 3, "Target": {"Group": "api"}, "Message": "up"})
        assert r.status_code == 200 and r.json()["EvalID"]
        status = (await c.get("/v1/job/web/scale")).json()
        group = status["TaskGroups"]["api"]
        assert group["Desired"] == 3
        assert [(e["Count"], e["PreviousCount"], e["Message"]) for e in group["Events"]] == [
            (3, 2, "up"), (None, 2, "dry run")]
        assert (await c.get("/v1/job/web")).json()["Version"] == 1
        ev = (await c.get(f"/v1/evaluation/{r.json()['EvalID']}")).json()
        assert ev["TriggeredBy"] == "job-scaling"
        store.upsert("deployments", "d1", {"ID": "d1", "JobID": "web", "Namespace": "default",
                                           "Status": "running"})
        r = await c.post("/v1/job/web/scale", json={"Count": 2, "Target": {"Group": "api"}})
        assert (r.status_code, r.text) == (400, "job scaling blocked due to active deployment")
        pols = (await c.get("/v1/scaling/policies")).json()
        assert pols[0]["Target"] == {"Namespace": "default", "Job": "web", "Group": "api"}

    run(t)


def test_blocking_query_returns_promptly_after_change() -> None:
    async def t(c: Client, store: Store) -> None:
        r = await c.get("/v1/jobs")
        index = int(r.headers["X-Nomad-Index"])
        job = await parsed_job(c)

        async def later() -> float:
            await asyncio.sleep(0.3)
            await c.post("/v1/jobs", json={"Job": job})
            return time.monotonic()

        writer = asyncio.create_task(later())
        t0 = time.monotonic()
        r = await c.get(f"/v1/jobs?index={index}&wait=5s")
        done = time.monotonic()
        changed_at = await writer
        assert [j["ID"] for j in r.json()] == ["web"]
        assert int(r.headers["X-Nomad-Index"]) > index
        assert done - t0 >= 0.25 and done - changed_at < 0.1
        # Without a change the query waits about `wait` (plus at most wait/16 jitter).
        t0 = time.monotonic()
        r = await c.get(f"/v1/job/web?index={r.headers['X-Nomad-Index']}&wait=200ms")
        assert 0.19 <= time.monotonic() - t0 < 1.0 and r.status_code == 200

    run(t)


def test_variables_cas_and_locks() -> None:
    async def t(c: Client, store: Store) -> None:
        assert (await c.get("/v1/var/app/cfg")).status_code == 404
        r = await c.put("/v1/var/app/cfg?cas=0", json={"Items": {"a": "1"}})
        assert r.status_code == 200
        idx = r.json()["ModifyIndex"]
        r = await c.put("/v1/var/app/cfg?cas=0", json={"Items": {"a": "2"}})
        assert r.status_code == 409 and r.json()["Items"] == {"a": "1"}
        assert (await c.put("/v1/var/app/cfg", json={"Items": {}})).text == "variable missing required Items object"
        lock = await c.put("/v1/var/app/lock?lock-acquire", json={"Items": {"o": "me"}, "Lock": {"TTL": "15s"}})
        assert lock.status_code == 200
        lock_id = lock.json()["Lock"]["ID"]
        other = await c.put("/v1/var/app/lock?lock-acquire", json={"Lock": {"TTL": "15s"}})
        assert other.status_code == 409 and "ID" not in other.json()["Lock"]
        assert "ID" not in (await c.get("/v1/var/app/lock")).json()["Lock"]
        assert (await c.put("/v1/var/app/lock", json={"Items": {"o": "x"}})).status_code == 409
        renew = await c.put("/v1/var/app/lock?lock-renew", json={"Lock": {"ID": lock_id}})
        assert renew.status_code == 200 and renew.json()["Lock"]["ID"] == lock_id
        assert (await c.put("/v1/var/app/lock?lock-release", json={"Lock": {"ID": "bad"}})).status_code == 409
        assert (await c.put("/v1/var/app/lock?lock-release", json={"Lock": {"ID": lock_id}})).status_code == 200
        assert (await c.put("/v1/var/app/lock?lock-acquire", json={"Lock": {"TTL": "15s"}})).status_code == 200
        bad_ttl = await c.put("/v1/var/app/x?lock-acquire", json={"Lock": {"TTL": "1s"}})
        assert bad_ttl.status_code == 400
        assert (await c.delete(f"/v1/var/app/cfg?cas={idx + 100}")).status_code == 409
        assert (await c.delete(f"/v1/var/app/cfg?cas={idx}")).status_code == 204
        assert [v["Path"] for v in (await c.get("/v1/vars?prefix=app/")).json()] == ["app/lock"]
        # Variable events carry metadata only: secrets never reach the event stream.
        var_events = [e for e in store.events if e.topic == "Variables"]
        assert var_events and all("Items" not in e.payload["Variable"] for e in var_events)

    run(t)


def test_acl_enforced_on_http() -> None:
    cfg = {"server": {"acl": True},
           "acl": {"policies": {"ro": {"namespace": {"default": {"policy": "read"}}}},
                   "tokens": [{"name": "ro", "policies": ["ro"]}]}}

    async def t(c: Client, store: Store) -> None:
        store.upsert("acl_tokens", "a1", {"AccessorID": "a1", "SecretID": "s-ro", "Type": "client",
                                          "Policies": ["ro"], "Name": "ro"})
        store.upsert("acl_tokens", "a2", {"AccessorID": "a2", "SecretID": "s-mgmt", "Type": "management",
                                          "Policies": None, "Name": "boot"})
        r = await c.get("/v1/jobs")
        assert (r.status_code, r.text) == (403, "Permission denied")
        assert (await c.get("/v1/jobs", headers={"X-Nomad-Token": "wrong"})).status_code == 403
        assert (await c.get("/v1/jobs", headers={"X-Nomad-Token": "s-ro"})).status_code == 200
        assert (await c.get("/v1/jobs", headers={"Authorization": "Bearer s-ro"})).status_code == 200
        job = await c.post("/v1/jobs/parse", json={"JobHCL": HCL}, headers={"X-Nomad-Token": "s-ro"})
        r = await c.post("/v1/jobs", json={"Job": job.json()}, headers={"X-Nomad-Token": "s-ro"})
        assert r.status_code == 403
        r = await c.post("/v1/jobs", json={"Job": job.json()}, headers={"X-Nomad-Token": "s-mgmt"})
        assert r.status_code == 200
        me = await c.get("/v1/acl/token/self", headers={"X-Nomad-Token": "s-ro"})
        assert me.json()["Name"] == "ro"
        assert (await c.get("/v1/nodes", headers={"X-Nomad-Token": "s-ro"})).status_code == 403

    run(t, cfg)


def test_event_topic_filters_follow_nomad_keys() -> None:
    alloc = Event("Allocation", "AllocationUpdated", "alloc-1", "default", 5, {}, ("web", "dep-1"))
    topics = parse_topics(["Allocation:web"])
    assert event_matches(alloc, topics, "default")
    assert not event_matches(alloc, parse_topics(["Allocation:other"]), "default")
    assert event_matches(alloc, parse_topics(["Allocation:alloc-1"]), "default")
    assert not event_matches(alloc, parse_topics(["Deployment:*"]), "default")
    assert event_matches(alloc, parse_topics([]), "default")
    assert not event_matches(alloc, topics, "ml")
    assert event_matches(alloc, topics, "*")


def test_nodes_pools_and_status_shapes() -> None:
    cfg = {"node_pools": [{"name": "gpu"}],
           "nodes": [{"name": "g1", "node_pool": "gpu", "devices": [{"name": "A100", "count": 2, "memory": "40 GiB"}]}]}

    async def t(c: Client, store: Store) -> None:
        assert (await c.get("/v1/status/leader")).json() == "127.0.0.1:4647"
        nodes = (await c.get("/v1/nodes")).json()
        assert [(n["Name"], n["NodePool"], n["Status"]) for n in nodes] == [("g1", "gpu", "ready")]
        node = (await c.get(f"/v1/node/{nodes[0]['ID']}")).json()
        dev = node["NodeResources"]["Devices"][0]
        assert (dev["Vendor"], dev["Type"], dev["Attributes"]["memory"], len(dev["Instances"])) == (
            "nvidia", "gpu", {"Int": 40, "Unit": "GiB"}, 2)  # typed, as Nomad's API (psstructs.Attribute)
        assert node["Drivers"]["raw_exec"]["Healthy"] is True
        assert {p["Name"] for p in (await c.get("/v1/node/pools")).json()} == {"all", "default", "gpu"}
        assert (await c.get("/v1/node/pool/nope")).status_code == 404

    run(t, cfg)
