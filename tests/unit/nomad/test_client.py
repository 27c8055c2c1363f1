"""The facade over real loopback sockets: settings, error mapping, redaction, retries, blocking, events."""

from __future__ import annotations

import json
import socket
import time

import pytest

from nomad_triton.nomad import errors
from nomad_triton.nomad.client import NomadClient
from nomad_triton.nomad.settings import ConnectionSettings

TOKEN = "9f1c2e7a-secret-token"


def client(url: str, **kw: object) -> NomadClient:
    return NomadClient(ConnectionSettings.from_env(env={}, address=url, **kw))


def test_settings_from_env_and_overrides() -> None:
    env = {"NOMAD_ADDR": "https://nomad.example:4646/", "NOMAD_TOKEN": TOKEN, "NOMAD_CACERT": "/ca.pem",
           "NOMAD_NAMESPACE": "ml", "NOMAD_SKIP_VERIFY": "false"}
    s = ConnectionSettings.from_env(env=env, namespace="prod", region=None)
    assert s.address == "https://nomad.example:4646"
    assert s.namespace == "prod" and s.token == TOKEN and s.secure
    assert s.verify() == "/ca.pem"
    assert TOKEN not in repr(s) and TOKEN not in repr(NomadClient(s))
    assert ConnectionSettings.from_env(env={}).address == "http://127.0.0.1:4646"
    assert ConnectionSettings.from_env(env={}).verify() is True  # TLS verification on by default
    assert ConnectionSettings.from_env(env={"NOMAD_SKIP_VERIFY": "1"}).verify() is False
    with pytest.raises(ValueError, match="NOMAD_SKIP_VERIFY"):
        ConnectionSettings.from_env(env={"NOMAD_SKIP_VERIFY": "maybe"})


def test_token_header_namespace_and_403_never_shows_token(fake_nomad) -> None:
    fake_nomad.on("GET", "/v1/job/web", 403, f"Permission denied for {TOKEN}")
    c = client(fake_nomad.url, token=TOKEN, namespace="ml")
    with pytest.raises(errors.PermissionDenied) as info:
        c.job("web")
    assert TOKEN not in str(info.value)
    assert "invalid or lacks" in str(info.value)
    assert fake_nomad.seen[0].headers["X-Nomad-Token"] == TOKEN
    assert fake_nomad.seen[0].query["namespace"] == ["ml"]
    with pytest.raises(errors.PermissionDenied, match="no ACL token was given"):
        client(fake_nomad.url).job("web")


def test_error_classification(fake_nomad) -> None:
    fake_nomad.on("GET", "/v1/job/missing", 404, "job not found")
    fake_nomad.on("POST", "/v1/job/web/scale", 500, "job scaling blocked due to active deployment")
    fake_nomad.on("POST", "/v1/job/web", 500, "Enforcing job modify index 12: job exists with conflicting job modify index: 13")
    fake_nomad.on("POST", "/v1/jobs/parse", 400, "1:5: Invalid block definition")
    c = client(fake_nomad.url)
    with pytest.raises(errors.NotFound, match="job not found"):
        c.job("missing")
    with pytest.raises(errors.ScalingBlocked):
        c.scale("web", "triton", 3, "test")
    with pytest.raises(errors.Conflict, match="plan again"):
        c.register({"ID": "web"}, enforce_index=True, job_modify_index=12)
    assert fake_nomad.seen[-1].body == {"Job": {"ID": "web"}, "PreserveCounts": True, "EnforceIndex": True,
                                        "JobModifyIndex": 12}
    with pytest.raises(errors.BadRequest, match="Invalid block"):
        c.parse_hcl("job {")


def test_unreachable_after_bounded_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again on exit: nothing listens there
    c = client(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.05)
    t0 = time.monotonic()
    with pytest.raises(errors.Unreachable, match=f"Nomad unreachable at http://127.0.0.1:{port}"):
        c.job("web")
    assert c.request_count == 3
    assert 0.15 <= time.monotonic() - t0 < 5


def test_plan_register_scale_bodies(fake_nomad) -> None:
    fake_nomad.on("POST", "/v1/job/web/plan", 200, {
        "JobModifyIndex": 41, "Diff": {"Type": "Edited"}, "FailedTGAllocs": None,
        "Annotations": {"DesiredTGUpdates": {"triton": {"Place": 1}}}, "Warnings": ""})
    fake_nomad.on("POST", "/v1/job/web/scale", 200, {"EvalID": "e1", "Index": 50})
    fake_nomad.on("GET", "/v1/job/web/scale", 200, {"TaskGroups": {"triton": {"Desired": 2}}})
    c = client(fake_nomad.url)
    plan = c.plan({"ID": "web"})
    assert plan.job_modify_index == 41 and plan.has_changes
    assert plan.desired_updates == {"triton": {"Place": 1}} and plan.failed_tg_allocs == {}
    assert fake_nomad.seen[-1].body["Job"] == {"ID": "web"} and fake_nomad.seen[-1].body["Diff"] is True
    c.scale("web", "triton", 3, "load rose", meta={"q": 2})
    assert fake_nomad.seen[-1].body == {"Target": {"Group": "triton"}, "Message": "load rose", "Error": False,
                                        "Meta": {"q": 2}, "PolicyOverride": False, "Count": 3}
    assert c.scale_status("web")["TaskGroups"]["triton"]["Desired"] == 2


def test_blocking_get_passes_index_and_reads_header(fake_nomad) -> None:
    fake_nomad.on("GET", "/v1/job/web/allocations", 200, [{"ID": "a1"}], {"X-Nomad-Index": "77"})
    c = client(fake_nomad.url)
    body, index = c.blocking_get("job/web/allocations", index=70, wait_s=2.5)
    assert body == [{"ID": "a1"}] and index == 77
    assert fake_nomad.seen[-1].query["index"] == ["70"] and fake_nomad.seen[-1].query["wait"] == ["2500ms"]


def test_events_yield_frames_then_return_at_deadline(fake_nomad) -> None:
    def stream(_req):
        def gen():
            yield '{"Index":5,"Events":[{"Topic":"Deployment","Type":"DeploymentStatusUpdate","Index":5}]}\n'
            while True:
                time.sleep(0.1)
                yield "{}\n"
        return 200, {}, gen()

    fake_nomad.routes[("GET", "/v1/event/stream")] = stream
    c = client(fake_nomad.url)
    t0 = time.monotonic()
    frames = list(c.events(["Deployment:web", "Allocation:web"], index=3, deadline=time.monotonic() + 0.6,
                           heartbeat_s=0.2))
    elapsed = time.monotonic() - t0
    assert frames[0]["Index"] == 5 and {} in frames
    assert 0.55 <= elapsed < 2.0
    first = fake_nomad.seen[0]
    assert first.query["topic"] == ["Deployment:web", "Allocation:web"] and first.query["index"] == ["3"]


def test_events_raise_stream_dropped_when_server_ends(fake_nomad) -> None:
    fake_nomad.routes[("GET", "/v1/event/stream")] = lambda _r: (200, {}, iter(['{"Index":9,"Events":[]}\n']))
    c = client(fake_nomad.url)
    got = []
    with pytest.raises(errors.StreamDropped):
        for frame in c.events(["Deployment:web"], deadline=time.monotonic() + 5):
            got.append(frame)
    assert got == [{"Index": 9, "Events": []}]


def test_var_lock_acquire_body_and_conflict(fake_nomad) -> None:
    fake_nomad.on("PUT", "/v1/var/nomad-triton/lock", 409, "variable already locked")
    c = client(fake_nomad.url)
    with pytest.raises(errors.Conflict):
        c.var_lock_acquire("nomad-triton/lock", ttl_s=15)
    req = fake_nomad.seen[-1]
    assert "lock-acquire" in req.query
    assert req.body == {"Path": "nomad-triton/lock", "Lock": {"TTL": "15000ms", "LockDelay": "0ms"}}


def test_events_frames_within_the_tolerance_keep_one_stream_open(fake_nomad) -> None:
    # Frames 0.1 s apart with 5 s left: a silent spell after any of them could overshoot the
    # deadline by at most 0.4 s, within a tenth of the read timeout (5 s), so the stream stays
    # open; with a fixed 50 ms tolerance it was reopened after every frame.
    def stream(_req):
        def gen():
            for i in range(4):
                time.sleep(0.1)
                yield json.dumps({"Index": 10 + i, "Events": []}) + "\n"
        return 200, {}, gen()

    fake_nomad.routes[("GET", "/v1/event/stream")] = stream
    c = client(fake_nomad.url)
    got = []
    with pytest.raises(errors.StreamDropped):  # the scripted stream ends after four frames
        for frame in c.events(["Deployment:web"], index=3, deadline=time.monotonic() + 5.0):
            got.append(frame["Index"])
    assert got == [10, 11, 12, 13]
    assert [r.path for r in fake_nomad.seen] == ["/v1/event/stream"]
