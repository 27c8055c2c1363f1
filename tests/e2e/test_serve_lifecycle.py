"""Process lifecycle of `serve`: drain on SIGTERM, no orphans on SIGKILL, bad repositories refused."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from nomad_triton.server.testing import ServerProcess, alive, process_name

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]

SLOW_TOML = """
max_batch_size = 8
instance_count = 2  # the two concurrent slow requests run side by side
entrypoint = "model:infer"
[[inputs]]
name = "seconds"
dtype = "float32"
shape = [1]
[[outputs]]
name = "done"
dtype = "float32"
shape = [1]
"""
SLOW_PY = """
import time

def infer(inputs):
    time.sleep(float(inputs["seconds"].max()))
    return {"done": inputs["seconds"]}
"""


def _slow_repo(root: Path) -> Path:
    folder = root / "models" / "slow"
    folder.mkdir(parents=True)
    (folder / "model.toml").write_text(SLOW_TOML)
    (folder / "model.py").write_text(SLOW_PY)
    return root / "models"


def _call(kind: str, url: str, seconds: float, results: dict[str, object]) -> None:
    mod = thttp if kind == "http" else tgrpc
    x = np.array([[seconds]], dtype=np.float32)
    client = mod.InferenceServerClient(url, **({"network_timeout": 60.0} if kind == "http" else {}))
    inp = mod.InferInput("seconds", [1, 1], "FP32")
    inp.set_data_from_numpy(x)
    try:
        results[kind] = client.infer("slow", [inp]).as_numpy("done")
    except Exception as exc:  # recorded and asserted on below
        results[kind] = exc
    finally:
        results[f"{kind}_t"] = time.monotonic()
        client.close()


def test_sigterm_turns_readiness_false_then_drains_in_flight(tmp_path: Path) -> None:
    with ServerProcess(_slow_repo(tmp_path), tmp_path / "serve.log", extra_args=("--drain-timeout", "15", "--json")) as srv:
        srv.wait_ready(timeout_s=90)
        results: dict[str, object] = {}
        calls = [threading.Thread(target=_call, args=("http", srv.http_url, 3.0, results)),
                 threading.Thread(target=_call, args=("grpc", srv.grpc_url, 3.0, results))]
        for t in calls:
            t.start()
        time.sleep(0.8)  # both requests are now executing inside the model
        assert srv.proc is not None
        t_term = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        statuses: list[tuple[float, int | None]] = []
        while "http" not in results and time.monotonic() - t_term < 10:
            statuses.append((time.monotonic(), srv.ready()))
            time.sleep(0.1)
        for t in calls:
            t.join(timeout=30)
        # Readiness flips to 400 (endpoint still up) while the requests are still running.
        during = [code for ts, code in statuses if ts < results["http_t"] - 0.2]  # type: ignore[operator]
        assert during and all(code == 400 for code in during), statuses
        # New work is refused while draining.
        late: dict[str, object] = {}
        if srv.proc.poll() is None:
            _call("http", srv.http_url, 0.0, late)
            assert isinstance(late["http"], Exception)
        # In-flight requests complete with their real results.
        for kind in ("http", "grpc"):
            assert not isinstance(results[kind], Exception), results[kind]
            np.testing.assert_array_equal(results[kind], [[3.0]])
        assert srv.wait(timeout_s=30) == 0, srv.log()[-2000:]
        events = [json.loads(line) for line in srv.out().splitlines()]  # stdout carries nothing else
        assert [e["event"] for e in events] == ["ready", "draining", "stopped"], events
        assert events[0]["models"] == ["slow"] and events[0]["http_port"] == srv.http_port
        assert not [p for p in srv.tree() if alive(p)]


def test_parent_sigkill_leaves_no_tritonserver(tmp_path: Path) -> None:
    models = ROOT / "examples" / "models"
    with ServerProcess(models, tmp_path / "serve.log") as srv:
        srv.wait_ready(timeout_s=90)
        tree = srv.tree()
        triton = [p for p in tree if process_name(p) == "tritonserver"]
        assert triton, [(p, process_name(p)) for p in tree]
        assert srv.proc is not None
        os.kill(srv.proc.pid, signal.SIGKILL)  # the launcher only; nobody else signals the rest
        srv.proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(p) for p in tree):
            time.sleep(0.1)
        assert not [(p, process_name(p)) for p in tree if alive(p)]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nomad_triton.cli.main", "serve", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, start_new_session=True)


def test_bad_dtype_refuses_to_start_with_one_clear_line(tmp_path: Path) -> None:
    good = tmp_path / "models" / "good"
    good.mkdir(parents=True)
    (good / "model.toml").write_text(SLOW_TOML)
    (good / "model.py").write_text(SLOW_PY)
    bad = tmp_path / "models" / "foo"
    bad.mkdir()
    (bad / "model.toml").write_text(SLOW_TOML.replace('dtype = "float32"', 'dtype = "float128"', 1))
    (bad / "model.py").write_text(SLOW_PY)
    res = _cli("--models", "models", cwd=tmp_path)
    assert res.returncode == 2, res
    assert res.stderr.strip() == "error: models/foo/model.toml: inputs.0.dtype: unsupported dtype 'float128' " \
        "(one of: bool, uint8, uint16, uint32, uint64, int8, int16, int32, int64, float16, float32, float64, bytes)"
    assert "Traceback" not in res.stdout + res.stderr


def test_broken_entrypoint_is_caught_before_triton_starts(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "boom"
    folder.mkdir(parents=True)
    (folder / "model.toml").write_text(SLOW_TOML)
    (folder / "model.py").write_text("import not_a_real_module_xyz\n")
    t0 = time.monotonic()
    res = _cli("--models", str(tmp_path / "models"), "--http-port", "1", "--grpc-port", "2",
               "--metrics-port", "3", cwd=tmp_path)
    assert res.returncode == 2, res
    line = f"error: {folder / 'model.toml'}: entrypoint: cannot import 'model': No module named 'not_a_real_module_xyz'"
    assert line in res.stderr.splitlines(), res.stderr
    assert "Traceback" not in res.stderr and "tritonserver" not in res.stdout + res.stderr
    assert time.monotonic() - t0 < 60


def test_json_errors_are_json_lines(tmp_path: Path) -> None:
    res = _cli("--models", str(tmp_path / "absent"), "--json", cwd=tmp_path)
    assert res.returncode == 2
    assert json.loads(res.stderr) == {"event": "error",
                                      "message": f"{tmp_path / 'absent'}: model repository is not a directory"}


def test_bad_port_env_is_usage_error(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "nomad_triton.server", "--models", str(tmp_path)],
                         env={**os.environ, "NOMAD_PORT_http": "eighty"}, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2 and res.stderr.strip() == "error: NOMAD_PORT_http: not a port number: 'eighty'"


def test_drain_deadline_is_enforced(tmp_path: Path) -> None:
    with ServerProcess(_slow_repo(tmp_path), tmp_path / "serve.log", extra_args=("--drain-timeout", "1")) as srv:
        srv.wait_ready(timeout_s=90)
        results: dict[str, object] = {}
        call = threading.Thread(target=_call, args=("grpc", srv.grpc_url, 60.0, results), daemon=True)
        call.start()
        time.sleep(0.8)
        assert srv.proc is not None
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        code = srv.wait(timeout_s=40)
        took = time.monotonic() - t0
        # drain (1 s) + tritonserver exit timeout (5 s) + bounded PyTriton cleanup (5 s), on its own:
        # well before the launcher's kill at 1 + 15 s.
        assert took < 14, (took, srv.log()[-2000:])
        assert code == 1  # requests were cut off: the drain did not complete
        assert "warning: 1 batch(es) still running at the drain deadline" in srv.log(), srv.log()[-2000:]
        assert "drain deadline passed; killing" not in srv.log()
        call.join(timeout=10)
        assert isinstance(results.get("grpc"), Exception)  # cut off, and the client is told so
        assert not [p for p in srv.tree() if alive(p)]


def test_port_in_use_fails_fast_after_bounded_retries(tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        srv = ServerProcess(_slow_repo(tmp_path), tmp_path / "serve.log")
        srv.http_port = blocker.getsockname()[1]
        srv.argv[srv.argv.index("--http-port") + 1] = str(srv.http_port)
        with srv:
            t0 = time.monotonic()
            code = srv.wait(timeout_s=120)
            took = time.monotonic() - t0
            log = srv.log()
    finally:
        blocker.close()
    assert code == 1, log[-3000:]
    assert log.count("error: triton failed to start: tritonserver exited while loading models") == 3, log[-3000:]
    assert "retrying" in log
    # No Python traceback of ours (one starts a line). tritonserver may log a model stub's failed
    # handshake with an embedded, quoted traceback when its ports vanish mid-load: that is Triton's log.
    assert not re.search(r"^Traceback \(most recent call last\):", log, re.MULTILINE), log[-3000:]
    assert took < 90, took  # PyTriton alone would poll the dead server for 120 s per attempt
