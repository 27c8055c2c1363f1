"""A Triton repository fetched as an `artifact`: a loopback HTTP server serves a tarball of
examples/triton-repo, devcluster downloads, verifies and unpacks it into the task's local/models,
and `nomad-triton serve` serves every model and version from there. A wrong checksum fails the
deploy with Nomad's "Failed Artifact Download" task event in the explanation.
"""

from __future__ import annotations

import hashlib
import http.server
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as thttp

from tests.e2e.cli_helpers import BIN, run_cli
from tests.e2e.conftest import Devcluster

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
REPO = ROOT / "examples" / "triton-repo"


@pytest.fixture()
def tarball_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(url, sha256) of a tarball of examples/triton-repo served on loopback."""
    tarball = tmp_path / "triton-repo.tar.gz"
    with tarfile.open(tarball, "w:gz") as tf:
        for child in sorted(REPO.iterdir()):
            tf.add(child, arcname=child.name, filter=lambda m: None if "__pycache__" in m.name else m)
    body = tarball.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            ok = self.path == "/triton-repo.tar.gz"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Length", str(len(body) if ok else 0))
            self.end_headers()
            if ok:
                self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/triton-repo.tar.gz", hashlib.sha256(body).hexdigest()
    finally:
        srv.shutdown()
        srv.server_close()


def _spec(tmp: Path, name: str, url: str, checksum: str) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(f'''
name = "{name}"

[driver]
type = "raw_exec"
command = "{BIN / 'nomad-triton'}"

[model_repository]
artifact = "{url}"
checksum = "sha256:{checksum}"
models = ["linear_onnx", "add_sub"]

[resources]
cpu = 500
memory = 1024

[rollout]
min_healthy_time = "1s"
healthy_deadline = "150s"
progress_deadline = "180s"

[health]
interval = "1s"
timeout = "1s"

[restart]
attempts = 0

[reschedule]
unlimited = false
attempts = 0
''')
    return path


def test_repository_from_an_artifact_serves_every_version(
    devcluster: Devcluster, tmp_path: Path, tarball_server: tuple[str, str]
) -> None:
    url, sha = tarball_server
    res = run_cli(["deploy", str(_spec(tmp_path, "tri-artifact", url, sha)), "--timeout", "200s", "--json"],
                  devcluster.addr, timeout=260)
    assert res.code == 0, res.text
    status = run_cli(["status", "tri-artifact", "--json"], devcluster.addr)
    assert status.code == 0, status.text
    [alloc] = status.json()["allocations"]
    assert alloc["models_ready"] == {"linear_onnx": True, "add_sub": True}
    assert alloc["models_versions"] == {"linear_onnx": ["1", "2"], "add_sub": ["1"]}
    client = thttp.InferenceServerClient(alloc["http"])
    try:
        x = np.ones((1, 16), np.float32)
        outs = []
        for version in ("1", "2"):
            inp = thttp.InferInput("x", [1, 16], "FP32")
            inp.set_data_from_numpy(x)
            outs.append(client.infer("linear_onnx", [inp], model_version=version).as_numpy("y"))
        assert outs[0].shape == (1, 4) and not np.allclose(outs[0], outs[1])
    finally:
        client.close()
    assert run_cli(["stop", "tri-artifact", "--purge"], devcluster.addr).code == 0


def test_wrong_checksum_fails_the_deploy_with_the_artifact_event(
    devcluster: Devcluster, tmp_path: Path, tarball_server: tuple[str, str]
) -> None:
    url, _ = tarball_server
    res = run_cli(["deploy", str(_spec(tmp_path, "tri-badsum", url, "0" * 64)), "--timeout", "60s"],
                  devcluster.addr, timeout=120)
    assert res.code in (1, 3), res.text
    assert "Failed Artifact Download: Failed to download artifacts: checksum mismatch for triton-repo.tar.gz" \
        in res.text, res.text
