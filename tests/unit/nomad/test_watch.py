"""DeploymentWatcher over real loopback HTTP against a scripted Nomad: stream, fallback, blocked, deadline."""

from __future__ import annotations

import time

from nomad_triton.nomad.client import NomadClient
from nomad_triton.nomad.settings import ConnectionSettings
from nomad_triton.nomad.watch import DeploymentWatcher, Outcome

EVAL = {"ID": "e1", "Status": "complete", "DeploymentID": "d1", "FailedTGAllocs": None}


def dep(status: str, healthy: int, index: int, desc: str = "") -> dict:
    return {"ID": "d1", "Status": status, "StatusDescription": desc, "JobVersion": 1, "ModifyIndex": index,
            "TaskGroups": {"triton": {"DesiredTotal": 1, "PlacedAllocs": 1, "HealthyAllocs": healthy}}}


def make(fake, **kw) -> DeploymentWatcher:
    c = NomadClient(ConnectionSettings.from_env(env={}, address=fake.url, retries=0))
    return DeploymentWatcher(c, "web", deadline=time.monotonic() + kw.pop("timeout", 5), **kw)


def test_follows_event_stream_to_success(fake_nomad) -> None:
    fake_nomad.on("GET", "/v1/evaluation/e1", 200, EVAL, {"X-Nomad-Index": "10"})
    fake_nomad.on("GET", "/v1/deployment/d1", 200, dep("running", 0, 11), {"X-Nomad-Index": "11"})

    def stream(_req):
        def gen():
            yield '{"Index":12,"Events":[{"Topic":"Allocation","Index":12,"Payload":{"Allocation":{}}}]}\n'
            time.sleep(0.05)
            yield ('{"Index":13,"Events":[{"Topic":"Deployment","Index":13,"Payload":{"Deployment":'
                   + __import__("json").dumps(dep("successful", 1, 13)) + "}}]}\n")
            while True:
                time.sleep(0.1)
                yield "{}\n"
        return 200, {}, gen()

    fake_nomad.routes[("GET", "/v1/event/stream")] = stream
    seen = []
    w = make(fake_nomad, on_progress=lambda s: seen.append((s.status, s.groups["triton"].healthy)))
    res = w.run("e1")
    assert res.outcome is Outcome.SUCCESSFUL
    assert seen == [("running", 0), ("successful", 1)]
    stream_req = [r for r in fake_nomad.seen if r.path == "/v1/event/stream"][0]
    assert stream_req.query["topic"] == ["Deployment:web", "Allocation:web"] and stream_req.query["index"] == ["12"]
    assert res.requests == 3  # eval, deployment, one stream


def test_stream_missing_falls_back_to_blocking_and_sees_rollback(fake_nomad) -> None:
    fake_nomad.on("GET", "/v1/evaluation/e1", 200, EVAL, {"X-Nomad-Index": "10"})
    calls = {"n": 0}

    def deployment(req):
        calls["n"] += 1
        if "index" not in req.query:
            return 200, {"X-Nomad-Index": "11"}, dep("running", 0, 11)
        return 200, {"X-Nomad-Index": "20"}, dep(
            "failed", 0, 20, "Failed due to unhealthy allocations - rolling back to job version 0")

    fake_nomad.routes[("GET", "/v1/deployment/d1")] = deployment
    res = make(fake_nomad).run("e1")  # no /v1/event/stream route: 404 -> blocking queries
    assert res.outcome is Outcome.ROLLED_BACK and res.rollback_version == 0
    assert calls["n"] == 2


def test_blocked_evaluation_ends_wait_with_reasons(fake_nomad) -> None:
    blocked = {"ID": "e1", "Status": "complete", "BlockedEval": "e2",
               "FailedTGAllocs": {"triton": {"NodesEvaluated": 1, "DimensionExhausted": {"devices: no devices match request": 1}}}}
    fake_nomad.on("GET", "/v1/evaluation/e1", 200, blocked, {"X-Nomad-Index": "10"})
    t0 = time.monotonic()
    res = make(fake_nomad, timeout=30).run("e1")
    assert res.outcome is Outcome.BLOCKED and "triton" in res.failed_tg_allocs
    assert time.monotonic() - t0 < 2


def test_deadline_bounds_the_wait(fake_nomad) -> None:
    fake_nomad.on("GET", "/v1/evaluation/e1", 200, EVAL, {"X-Nomad-Index": "10"})
    fake_nomad.on("GET", "/v1/deployment/d1", 200, dep("running", 0, 11), {"X-Nomad-Index": "11"})

    def silent(_req):
        def gen():
            while True:
                time.sleep(0.1)
                yield "{}\n"
        return 200, {}, gen()

    fake_nomad.routes[("GET", "/v1/event/stream")] = silent
    t0 = time.monotonic()
    res = make(fake_nomad, timeout=1.0).run("e1")
    assert res.outcome is Outcome.TIMEOUT
    assert 0.9 <= time.monotonic() - t0 < 2.5


def test_unreachable_mid_watch_is_reported_after_grace(fake_nomad) -> None:
    fake_nomad.on("GET", "/v1/evaluation/e1", 200, EVAL, {"X-Nomad-Index": "10"})
    fake_nomad.on("GET", "/v1/deployment/d1", 200, dep("running", 0, 11), {"X-Nomad-Index": "11"})
    w = make(fake_nomad, timeout=20, lost_grace_s=1.0)
    state_reads = {"n": 0}
    orig = w.client.blocking_get

    def flaky(path, index=0, wait_s=30.0, params=None):
        state_reads["n"] += 1
        if state_reads["n"] > 2:
            from nomad_triton.nomad import errors
            raise errors.Unreachable("Nomad unreachable at test")
        return orig(path, index, wait_s, params)

    w.client.blocking_get = flaky  # type: ignore[method-assign]
    t0 = time.monotonic()
    res = w.run("e1")
    assert res.outcome is Outcome.LOST and "lost contact" in res.message
    assert time.monotonic() - t0 < 5


def test_one_stream_from_eval_create_index_covers_eval_and_deployment(fake_nomad) -> None:
    import json

    def frame(index: int, topic: str, payload: dict) -> str:
        return json.dumps({"Index": index, "Events": [{"Topic": topic, "Index": index, "Payload": payload}]}) + "\n"

    def stream(_req):
        def gen():
            yield frame(8, "Evaluation", {"Evaluation": {"ID": "e1", "Status": "pending"}})
            yield frame(9, "Deployment", {"Deployment": dep("running", 0, 9)})
            yield frame(10, "Evaluation", {"Evaluation": EVAL})
            yield frame(12, "Deployment", {"Deployment": dep("successful", 1, 12)})
            while True:
                time.sleep(0.1)
                yield "{}\n"
        return 200, {}, gen()

    fake_nomad.routes[("GET", "/v1/event/stream")] = stream
    seen = []
    w = make(fake_nomad, on_progress=lambda s: seen.append(s.status))
    res = w.run("e1", start_index=8)
    assert res.outcome is Outcome.SUCCESSFUL and seen == ["running", "successful"]
    assert res.requests == 1  # the whole wait was one request
    req = fake_nomad.seen[0]
    assert req.query["index"] == ["8"] and "Evaluation:web" in req.query["topic"]


def test_stream_unavailable_with_start_index_falls_back_to_blocking(fake_nomad) -> None:
    fake_nomad.on("GET", "/v1/evaluation/e1", 200, EVAL, {"X-Nomad-Index": "10"})
    fake_nomad.on("GET", "/v1/deployment/d1", 200, dep("successful", 1, 11), {"X-Nomad-Index": "11"})
    res = make(fake_nomad).run("e1", start_index=8)  # no stream route: 404, then blocking queries
    assert res.outcome is Outcome.SUCCESSFUL
    assert [r.path for r in fake_nomad.seen] == ["/v1/event/stream", "/v1/evaluation/e1", "/v1/deployment/d1"]
