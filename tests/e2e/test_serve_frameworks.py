"""TorchScript and TensorFlow SavedModel models next to ONNX and python ones, in one real `serve`.

The frameworks are optional extras (`make test EXTRAS="torch tensorflow"`, which .ci/run does). With
them installed this serves models built by examples/build_triton_repo.py --frameworks and checks
their answers over HTTP and gRPC; without them (everyday dev venvs) it checks the other documented
behaviour: the platforms are refused at load with a line naming the extra and the ONNX conversion.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

import examples.build_onnx_model as gen
import examples.build_triton_repo as repo_script
from nomad_triton.server.testing import ServerProcess, free_ports

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
HAVE_FRAMEWORKS = all(importlib.util.find_spec(m) is not None for m in ("torch", "tensorflow"))


def _infer_both(srv: ServerProcess, model: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hc = thttp.InferenceServerClient(srv.http_url)
    gc = tgrpc.InferenceServerClient(srv.grpc_url)
    try:
        hi = thttp.InferInput("x", list(x.shape), "FP32")
        hi.set_data_from_numpy(x)
        gi = tgrpc.InferInput("x", list(x.shape), "FP32")
        gi.set_data_from_numpy(x)
        return hc.infer(model, [hi]).as_numpy("y"), gc.infer(model, [gi]).as_numpy("y")
    finally:
        hc.close()
        gc.close()


def test_torchscript_and_savedmodel_serve_beside_onnx_and_python(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "triton-repo", repo)
    if HAVE_FRAMEWORKS:
        repo_script.write_frameworks(repo)
        with ServerProcess(repo, tmp_path / "serve.log") as srv:
            srv.wait_ready(timeout_s=240)
            x = np.random.default_rng(5).standard_normal((3, 16)).astype(np.float32)
            w, b = gen.weights(repo_script.VERSION_SEEDS[1])
            want = np.maximum(x @ w + b, 0)
            for model in ("torch_linear", "tf_linear"):
                for got in _infer_both(srv, model, x):
                    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
            assert srv.ready("/v2/models/linear_onnx/versions/2/ready") == 200
            assert srv.ready("/v2/models/add_sub/ready") == 200
        return
    for name, platform, file in (("torch_linear", "pytorch_libtorch", "model.pt"),
                                 ("tf_linear", "tensorflow_savedmodel", "model.savedmodel")):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "1" / file).write_bytes(b"")
        (repo / name / "config.pbtxt").write_text(
            f'platform: "{platform}"\nmax_batch_size: 8\n'
            'input [{ name: "x" data_type: TYPE_FP32 dims: [16] }]\noutput [{ name: "y" data_type: TYPE_FP32 dims: [4] }]\n')
    http, grpc, metrics = free_ports(3)
    res = subprocess.run([sys.executable, "-m", "nomad_triton.server", "--models", str(repo), "--http-port", str(http),
                          "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {repo / 'tf_linear' / 'config.pbtxt'}: platform: tensorflow_savedmodel needs the optional "
        "'tensorflow' extra, which is not installed (pip install 'nomad-triton[tensorflow]'), or convert the model "
        "to ONNX: tf2onnx (python -m tf2onnx.convert --saved-model ...) and platform onnxruntime_onnx",
        f"error: {repo / 'torch_linear' / 'config.pbtxt'}: platform: pytorch_libtorch needs the optional 'torch' "
        "extra, which is not installed (pip install 'nomad-triton[torch]'), or convert the model to ONNX: "
        "torch.onnx.export(...) and platform onnxruntime_onnx",
    ], res.stderr[-3000:]
