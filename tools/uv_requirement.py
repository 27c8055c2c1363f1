"""Print the pip requirement line (with every locked wheel hash) for the uv that uv.lock pins.

Why: `make venv` must install exactly the lock, and the lock is read by uv, so uv itself has to come
from the lock too. pip installs this one line with --require-hashes; uv then installs everything else.
Stdlib only: it runs before the venv has anything in it.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "uv.lock"


def requirement(lock_text: str) -> str:
    """`uv==V --hash=sha256:... ...` for the single uv package in the lock (every wheel, no sdist)."""
    packages = [p for p in tomllib.loads(lock_text).get("package", []) if p.get("name") == "uv"]
    if len(packages) != 1 or not packages[0].get("wheels"):
        raise SystemExit(f"{LOCK}: expected exactly one locked 'uv' with wheels (it belongs in the dev extra)")
    uv = packages[0]
    hashes = " ".join(f"--hash={wheel['hash']}" for wheel in uv["wheels"])
    return f"uv=={uv['version']} {hashes}"


if __name__ == "__main__":
    print(requirement(LOCK.read_text()))
    sys.exit(0)
