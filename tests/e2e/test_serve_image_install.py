"""Replay the Dockerfile's Python install steps in a fresh venv from /usr/bin/python3.11.

There is no Docker engine here; this proves the hashed docker/requirements.txt (exported from uv.lock)
installs on its own (no missing, conflicting or unhashed pins) and that the project builds with the
locked setuptools and installs with --no-deps on top of it, exactly as the image does. pip's download cache is reused between runs to keep it around a minute.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
BASE_PYTHON = Path("/usr/bin/python3.11") if Path("/usr/bin/python3.11").exists() else \
    Path(shutil.which("python3.11") or "python3.11")


def _run(*cmd: str | Path, timeout: float) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.mark.timeout(900)
def test_pinned_requirements_and_project_install_in_fresh_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(BASE_PYTHON, "-m", "venv", venv, timeout=120)
    py = venv / "bin" / "python"
    # Same commands as the Dockerfile's RUN steps (except the cache, which the image disables).
    for reqs in ("requirements.txt", "build-requirements.txt"):
        _run(py, "-m", "pip", "install", "-q", "--require-hashes", "-r", ROOT / "docker" / reqs, timeout=780)
    _run(py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", ROOT, timeout=300)
    _run(py, "-m", "pip", "check", timeout=120)
    _run(py, "-c", "import nomad_triton.server.app, onnxruntime, tritonclient.grpc", timeout=120)
    helptext = _run(venv / "bin" / "nomad-triton", "serve", "--help", timeout=120).stdout
    assert "--models" in helptext and "--drain-timeout" in helptext
