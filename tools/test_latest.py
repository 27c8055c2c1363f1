"""`make test-latest`: does nomad-triton still work with the newest versions its ranges allow?

People who `pip install nomad-triton` into their own environment get the newest releases inside
pyproject.toml's ranges, not our lock. This builds a throwaway venv resolved from the index today
(`uv pip install --resolution highest`, the lock ignored), runs the unit tests in it, and reports
which pins moved and which tests broke, so a range is narrowed on purpose instead of by surprise.

It is a report, never a gate: it exits 0 whatever it finds (the lock, not today's index, decides
whether CI is green). Every step has a deadline so a slow index cannot hang CI.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UV = Path(sys.executable).parent / "uv"
BASE_PYTHON = Path("/usr/bin/python3.11") if Path("/usr/bin/python3.11").exists() else Path(sys.executable)
INSTALL_DEADLINE_S = 900
TEST_DEADLINE_S = 900
# Tests that compare the venv with the lock: by construction they fail here and say nothing new.
LOCK_ONLY_TESTS = ["tests/unit/test_dependency_lock.py"]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {_norm(p["name"]): p["version"] for p in lock["package"] if "version" in p}


def _installed_versions(python: Path) -> dict[str, str]:
    res = subprocess.run([str(UV), "pip", "freeze", "--python", str(python)], capture_output=True,
                         text=True, timeout=60)
    pins = (line.split("==", 1) for line in res.stdout.splitlines() if "==" in line)
    return {_norm(name): version for name, version in pins}


def _failed_tests(pytest_output: str) -> list[str]:
    return sorted({m[1] for m in re.finditer(r"^(?:FAILED|ERROR) (\S+)", pytest_output, re.MULTILINE)})


def main() -> int:
    print("== test-latest: newest versions pyproject.toml allows, the lock ignored (a report, never fails CI)")
    with tempfile.TemporaryDirectory(prefix="nomad-triton-latest-") as tmp:
        venv = Path(tmp) / "venv"
        python = venv / "bin" / "python"
        started = time.monotonic()
        try:
            subprocess.run([str(UV), "venv", "-q", "--python", str(BASE_PYTHON), str(venv)], check=True,
                           timeout=120, capture_output=True, text=True)
            install = subprocess.run(
                [str(UV), "pip", "install", "-q", "--python", str(python), "--resolution", "highest",
                 "--no-config", "-e", f"{ROOT}[dev]"],
                capture_output=True, text=True, timeout=INSTALL_DEADLINE_S)
        except (subprocess.SubprocessError, OSError) as exc:
            print(f"test-latest: could not build the venv ({exc}); nothing to report")
            return 0
        if install.returncode != 0:
            print("test-latest: the newest allowed versions do not even install together:")
            print(install.stderr.strip()[-3000:])
            return 0
        locked, latest = _locked_versions(), _installed_versions(python)
        moved = {n: (locked[n], v) for n, v in sorted(latest.items()) if n in locked and locked[n] != v}
        new = sorted(set(latest) - set(locked) - {"nomad-triton"})
        print(f"resolved in {time.monotonic() - started:.0f} s; {len(moved)} pins moved since the lock:")
        for name, (old, now) in moved.items():
            print(f"  {name}: {old} -> {now}")
        if new:
            print(f"  not in the lock at all: {', '.join(new)}")
        cmd = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", "tests/unit",
               *(f"--ignore={t}" for t in LOCK_ONLY_TESTS)]
        try:
            tests = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TEST_DEADLINE_S)
        except subprocess.TimeoutExpired:
            print(f"test-latest: unit tests did not finish within {TEST_DEADLINE_S} s")
            return 0
        summary = (tests.stdout.strip().splitlines() or ["(no output)"])[-1]
        failed = _failed_tests(tests.stdout)
        if tests.returncode == 0:
            print(f"unit tests on the newest versions: {summary}")
        else:
            print(f"unit tests on the newest versions BROKE ({summary}); narrow a range or fix the code:")
            for name in failed[:50]:
                print(f"  {name}")
            if not failed:
                print(tests.stdout.strip()[-3000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
