"""The server image's Dockerfile: hadolint-clean and carrying the properties the deployment relies on.

No Docker engine runs here, so the build itself is checked piecewise: this file lints and inspects
the Dockerfile; tests/e2e/test_serve_image_install.py replays its pip steps in a fresh venv.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        full = buf + line
        buf = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_is_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    res = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_image_properties() -> None:
    ins = instructions()
    names = [n for n, _ in ins]
    froms = [a for n, a in ins if n == "FROM"]
    assert len(froms) == 1 and re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-runtime-ubuntu22\.04", froms[0]), froms
    run_text = " ".join(a for n, a in ins if n == "RUN")
    assert "python3.11 -m venv" in run_text and "libpython3.11" in run_text
    # Both requirement files come from uv.lock with hashes; pip must refuse anything unhashed.
    assert "pip install --no-cache-dir --require-hashes -r /tmp/requirements.txt" in run_text
    assert "pip install --no-cache-dir --require-hashes -r /tmp/build-requirements.txt" in run_text
    assert "--no-deps --no-build-isolation /src" in run_text  # the project's build uses the locked setuptools
    assert ("COPY", "docker/requirements.txt docker/build-requirements.txt /tmp/") in ins
    users = [a for n, a in ins if n == "USER"]
    assert users and users[-1] not in ("root", "0") and names.index("USER") < names.index("ENTRYPOINT")
    assert ("VOLUME", '["/models"]') in ins
    assert ("EXPOSE", "8000 8001 8002") in ins
    health = [a for n, a in ins if n == "HEALTHCHECK"]
    assert len(health) == 1 and "/v2/health/ready" in health[0] and "NOMAD_PORT_http" in health[0]
    entry = json.loads(next(a for n, a in ins if n == "ENTRYPOINT"))
    assert entry == ["nomad-triton", "serve"]
    cmd = json.loads(next(a for n, a in ins if n == "CMD"))
    assert cmd[:2] == ["--models", "/models"] and "--host" in cmd


def test_dockerignore_admits_only_what_is_copied() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert "*" in lines
    copied = {"docker/requirements.txt", "docker/build-requirements.txt", "pyproject.toml", "README.md", "nomad_triton/", "templates/"}
    assert copied <= {line[1:] for line in lines if line.startswith("!")}
