"""examples/triton-repo (Triton's layout: config.pbtxt, version folders) served by a real `serve` process.

Driven with tritonclient over HTTP and gRPC: every model and version answers with its own weights,
readiness is per version, dynamic batching forms batches, and broken models either stop the server
(default, Triton's --exit-on-error) or are listed not ready while the rest serve (--no-exit-on-error).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from prometheus_client.parser import text_string_to_metric_families

import examples.build_onnx_model as gen
import examples.build_triton_repo as repo_script
from nomad_triton.server.testing import ServerProcess, free_ports

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
REPO = ROOT / "examples" / "triton-repo"
TOKEN = "e2e-triton-repo-token-51c2"
TRACEBACK = re.compile(r"^Traceback \(most recent call last\):", re.MULTILINE)


def _want(version: int, x: np.ndarray) -> np.ndarray:
    w, b = gen.weights(repo_script.VERSION_SEEDS[version])
    return np.maximum(x @ w + b, 0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """examples/triton-repo plus `gpu_linear` (linear_onnx v1 pinned to KIND_GPU gpus [0]), served with
    --allow-cpu-fallback: this machine has no GPU, so that model runs on CPU with a warning."""
    tmp = tmp_path_factory.mktemp("triton-repo")
    repo = tmp / "repo"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns("__pycache__"))
    gpu = repo / "gpu_linear"
    (gpu / "1").mkdir(parents=True)
    shutil.copy(REPO / "linear_onnx" / "1" / "model.onnx", gpu / "1" / "model.onnx")
    (gpu / "config.pbtxt").write_text(
        (REPO / "linear_onnx" / "config.pbtxt").read_text().replace('name: "linear_onnx"', 'name: "gpu_linear"')
        .replace("kind: KIND_CPU", "kind: KIND_GPU\n    gpus: [ 0 ]"))
    with ServerProcess(repo, tmp / "serve.log", extra_args=("--allow-cpu-fallback",),
                       env={"NOMAD_TRITON_ACCESS_TOKEN": TOKEN}) as srv:
        srv.wait_ready(timeout_s=150)
        yield srv


def test_kind_gpu_model_falls_back_to_cpu_when_allowed(server: ServerProcess) -> None:
    x = np.ones((2, 16), np.float32)
    client = thttp.InferenceServerClient(server.http_url)
    try:
        inp = thttp.InferInput("x", [2, 16], "FP32")
        inp.set_data_from_numpy(x)
        got = client.infer("gpu_linear", [inp]).as_numpy("y")
    finally:
        client.close()
    np.testing.assert_allclose(got, _want(1, x), rtol=1e-5)
    warnings = [line for line in server.log().splitlines() if line.startswith("warning: ")]
    assert any("gpu_linear/config.pbtxt: instance_group[0].kind: KIND_GPU without a GPU; running on CPU "
               "(--allow-cpu-fallback)" in w for w in warnings), warnings


def _http_linear(url: str, x: np.ndarray, version: str) -> np.ndarray:
    client = thttp.InferenceServerClient(url)
    try:
        inp = thttp.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return client.infer("linear_onnx", [inp], model_version=version).as_numpy("y")
    finally:
        client.close()


@pytest.mark.parametrize(("version", "expect_version"), [("1", 1), ("2", 2), ("", 2)])
def test_each_onnx_version_answers_over_http_and_grpc(server: ServerProcess, version: str, expect_version: int) -> None:
    x = np.random.default_rng(7).standard_normal((3, 16)).astype(np.float32)
    want = _want(expect_version, x)
    np.testing.assert_allclose(_http_linear(server.http_url, x, version), want, rtol=1e-5, atol=1e-6)
    gc = tgrpc.InferenceServerClient(server.grpc_url)
    try:
        inp = tgrpc.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = gc.infer("linear_onnx", [inp], model_version=version).as_numpy("y")
    finally:
        gc.close()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(_want(1, x), _want(2, x))  # the versions really differ


def test_python_backend_add_sub_over_http_and_grpc(server: ServerProcess) -> None:
    a = np.array([1, 2, 3, 4], np.float32)
    b = np.array([0.5, 0.5, 1, -1], np.float32)
    hc = thttp.InferenceServerClient(server.http_url)
    inputs = []
    for name, value in (("INPUT0", a), ("INPUT1", b)):
        inputs.append(thttp.InferInput(name, [4], "FP32"))
        inputs[-1].set_data_from_numpy(value)
    res = hc.infer("add_sub", inputs)
    hc.close()
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)
    gc = tgrpc.InferenceServerClient(server.grpc_url)
    ginputs = []
    for name, value in (("INPUT0", a), ("INPUT1", b)):
        ginputs.append(tgrpc.InferInput(name, [4], "FP32"))
        ginputs[-1].set_data_from_numpy(value)
    gres = gc.infer("add_sub", ginputs, model_version="1")
    gc.close()
    np.testing.assert_array_equal(gres.as_numpy("OUTPUT1"), a - b)


def test_readiness_is_per_model_and_version(server: ServerProcess) -> None:
    assert server.ready("/v2/health/ready") == 200
    assert server.ready("/v2/models/linear_onnx/versions/1/ready") == 200
    assert server.ready("/v2/models/linear_onnx/versions/2/ready") == 200
    assert server.ready("/v2/models/linear_onnx/versions/3/ready") == 400
    assert server.ready("/v2/models/add_sub/ready") == 200
    gc = tgrpc.InferenceServerClient(server.grpc_url)
    try:
        assert gc.is_model_ready("linear_onnx", "1") and not gc.is_model_ready("linear_onnx", "3")
        assert gc.get_model_metadata("linear_onnx", as_json=True)["versions"] == ["1", "2"]
    finally:
        gc.close()
    index = httpx.post(f"http://{server.http_url}/v2/repository/index",
                       headers={"triton-access-token": TOKEN}, timeout=5).json()
    states = {(m["name"], m.get("version")): m.get("state") for m in index}
    assert states[("linear_onnx", "1")] == "READY" and states[("linear_onnx", "2")] == "READY", states
    assert not any(name.count("__nt_v") for name, _ in states), states  # private binding names never show


def _metric(server: ServerProcess, family_name: str, model: str, version: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        if family.name == family_name:
            for s in family.samples:
                if s.labels.get("model") == model and s.labels.get("version") == version:
                    return s.value
    raise AssertionError(f"{family_name} for {model} v{version} not in metrics")


def test_dynamic_batching_forms_batches(server: ServerProcess) -> None:
    before_n = _metric(server, "nv_inference_count", "linear_onnx", "2")
    before_exec = _metric(server, "nv_inference_exec_count", "linear_onnx", "2")
    x = np.ones((1, 16), np.float32)
    clients = [thttp.InferenceServerClient(server.http_url) for _ in range(16)]

    def burst(client: thttp.InferenceServerClient) -> None:
        for _ in range(20):
            inp = thttp.InferInput("x", [1, 16], "FP32")
            inp.set_data_from_numpy(x)
            client.infer("linear_onnx", [inp], model_version="2")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(burst, clients))
    for c in clients:
        c.close()
    n = _metric(server, "nv_inference_count", "linear_onnx", "2") - before_n
    execs = _metric(server, "nv_inference_exec_count", "linear_onnx", "2") - before_exec
    assert n == 320 and execs < n, (n, execs)  # fewer executions than requests: batches were formed


def _broken_repo(tmp: Path) -> Path:
    repo = tmp / "repo"
    shutil.copytree(REPO, repo)
    model_py = repo / "add_sub" / "1" / "model.py"
    model_py.write_text(model_py.read_text().replace(
        "    def initialize(self, args):\n",
        "    def initialize(self, args):\n        raise RuntimeError('weights missing')\n"))
    trt = repo / "engine"
    (trt / "1").mkdir(parents=True)
    (trt / "1" / "model.plan").write_bytes(b"\0")
    (trt / "config.pbtxt").write_text(
        'platform: "tensorrt_plan"\nmax_batch_size: 8\n'
        'input [{ name: "i" data_type: TYPE_FP32 dims: [2] }]\noutput [{ name: "o" data_type: TYPE_FP32 dims: [2] }]\n')
    return repo


def test_exit_on_error_refuses_to_start_and_names_every_broken_model(tmp_path: Path) -> None:
    repo = _broken_repo(tmp_path)
    http, grpc, metrics = free_ports(3)
    res = subprocess.run(
        [sys.executable, "-m", "nomad_triton.server", "--models", str(repo), "--http-port", str(http),
         "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
        capture_output=True, text=True, timeout=180,
    )
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {repo / 'engine' / 'config.pbtxt'}: platform: model 'engine' uses 'tensorrt_plan', which this "
        "server cannot run (supported: onnxruntime_onnx (backend onnxruntime), python, pytorch_libtorch, "
        "tensorflow_savedmodel) (convert it to ONNX, or serve it with tritonserver)",
        f"error: {repo / 'add_sub' / '1' / 'model.py'}: initialize() raised RuntimeError: weights missing "
        "(traceback in the log)",
    ], res.stderr[-3000:]
    assert "weights missing" in res.stderr and "ready in" not in res.stdout
    assert len(TRACEBACK.findall(res.stderr)) == 1  # only the failing initialize(), logged for the operator


def test_no_exit_on_error_lists_broken_models_not_ready_and_serves_the_rest(tmp_path: Path) -> None:
    repo = _broken_repo(tmp_path)
    with ServerProcess(repo, tmp_path / "serve.log", extra_args=("--no-exit-on-error",),
                       env={"NOMAD_TRITON_ACCESS_TOKEN": TOKEN}) as srv:
        deadline = time.monotonic() + 150
        while srv.ready("/v2/models/linear_onnx/ready") != 200:
            assert srv.proc is not None and srv.proc.poll() is None, srv.log()[-3000:]
            assert time.monotonic() < deadline, srv.log()[-3000:]
            time.sleep(0.2)
        srv.remember_groups()
        assert srv.ready("/v2/health/ready") == 400  # strict readiness: a listed model is not loaded
        assert srv.ready("/v2/health/live") == 200
        assert srv.ready("/v2/models/engine/ready") == 400 and srv.ready("/v2/models/add_sub/ready") == 400
        x = np.ones((2, 16), np.float32)
        np.testing.assert_allclose(_http_linear(srv.http_url, x, "1"), _want(1, x), rtol=1e-5)
        index = httpx.post(f"http://{srv.http_url}/v2/repository/index",
                           headers={"triton-access-token": TOKEN}, timeout=5).json()
        reasons = {m["name"]: m.get("reason", "") for m in index if m.get("state") == "UNAVAILABLE"}
        assert "tensorrt_plan" in reasons.get("engine", ""), index
        assert "weights missing" in reasons.get("add_sub", ""), index
        deadline = time.monotonic() + 10
        while "ready in" not in srv.out() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "NOT READY: add_sub, engine" in srv.out(), srv.out()
        warnings = [line for line in srv.log().splitlines() if line.startswith("warning: ")]
        assert any("engine/config.pbtxt: platform:" in w for w in warnings), warnings


def test_probe_and_status_show_versions_and_readiness(server: ServerProcess) -> None:
    import asyncio

    from nomad_triton.cli.status import model_readiness, model_versions
    from nomad_triton.probe.observations import Endpoint
    from nomad_triton.probe.triton import Prober

    async def one() -> object:
        async with Prober(timeout_s=5.0) as prober:
            return await prober.probe(Endpoint("a1", server.http_url, f"127.0.0.1:{server.metrics_port}",
                                               ("linear_onnx", "add_sub")))

    obs = asyncio.run(one())
    assert obs.ready is True, obs  # type: ignore[attr-defined]
    models = obs.models  # type: ignore[attr-defined]
    assert models["linear_onnx"].versions == ("1", "2") and models["linear_onnx"].ready is True
    assert models["add_sub"].versions == ("1",)
    assert model_versions(server.http_url, ["linear_onnx", "nope"]) == {"linear_onnx": ["1", "2"], "nope": []}
    assert model_readiness(server.http_url, ["linear_onnx", "nope"]) == {"linear_onnx": True, "nope": False}


def _variant(repo: Path, name: str, old: str, new: str) -> Path:
    folder = repo / name
    shutil.copytree(REPO / "linear_onnx", folder)
    config = folder / "config.pbtxt"
    text = config.read_text().replace('name: "linear_onnx"', f'name: "{name}"')
    assert old in text, old
    config.write_text(text.replace(old, new))
    return config


def test_every_bad_input_case_is_one_line_naming_file_and_field(tmp_path: Path) -> None:
    repo = _broken_repo(tmp_path)  # add_sub whose initialize raises, engine on tensorrt_plan
    cases = {
        "syntax": ("max_batch_size: 64", "max_batch_size: 64 }", ":5:20: syntax error"),
        "unknown": ("max_batch_size: 64", "max_batch_size: 64\nmax_batch: 3", ":6:1: max_batch: unknown field"),
        "reshape": ("dims: [ 16 ]", "dims: [ 16 ]\n    reshape: { shape: [ 3, 5 ] }",
                    ": input[0].reshape: shape [3, 5] holds 15 elements but dims [16] hold 16"),
        "bf16": ("data_type: TYPE_FP32\n    dims: [ 4 ]", "data_type: TYPE_BF16\n    dims: [ 4 ]",
                 ": output[0].data_type: TYPE_BF16 cannot be produced"),
        "policy": ("version_policy: { all { } }", "version_policy: { specific { versions: [ 3 ] } }",
                   ": version_policy.specific.versions: version(s) [3] have no folder"),
        "mismatch": ('name: "x"', 'name: "input"', ": input[0].name: 'input' is not in 1/model.onnx (['x'])"),
    }
    configs = {name: _variant(repo, name, old, new) for name, (old, new, _) in cases.items()}
    (repo / "nofile").mkdir()
    shutil.copytree(REPO / "linear_onnx", repo / "nofile", dirs_exist_ok=True)
    (repo / "nofile" / "config.pbtxt").write_text(
        (REPO / "linear_onnx" / "config.pbtxt").read_text().replace('name: "linear_onnx"', 'name: "nofile"'))
    (repo / "nofile" / "1" / "model.onnx").unlink()
    http, grpc, metrics = free_ports(3)
    res = subprocess.run(
        [sys.executable, "-m", "nomad_triton.server", "--models", str(repo), "--http-port", str(http),
         "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--json"],
        capture_output=True, text=True, timeout=180,
    )
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [json.loads(line)["message"] for line in res.stderr.splitlines() if line.startswith('{"event": "error"')]
    by_model = {name: [e for e in errors if f"/{name}/" in e] for name in [*cases, "nofile", "add_sub", "engine"]}
    for name, (_, _, fragment) in cases.items():
        [line] = by_model[name]
        assert line.startswith(f"{configs[name]}") and fragment in line, (name, line)
    [nofile] = by_model["nofile"]
    assert nofile == f"{repo / 'nofile' / '1'}: no model file 'model.onnx' for version 1 " \
        "(set by default_model_filename or the platform)"
    assert len(by_model["add_sub"]) == 1 and len(by_model["engine"]) == 1
    assert len(errors) == len(cases) + 3, errors  # nothing else, and the good linear_onnx is not named
    assert res.stdout == ""  # no ready line: nothing was served
