"""Run the Go conformance program (tests/conformance) against devcluster or a given Nomad.

Why a Python driver: `make conformance`, CI and the pytest wrapper all need the same steps: find
the Go toolchain (or say clearly that it is missing), build the program with the official
`github.com/hashicorp/nomad/api` client, start a devcluster of its own on a free loopback port
exactly as `nomad-triton dev up` does, run the checks, and stop devcluster again whatever
happened. With `--addr` it runs against that Nomad instead (NOMAD_TOKEN from the environment),
which is how the same checks are pointed at a real cluster.

Exit status: the program's (0 all checks passed, 1 some failed), 2 if it could not run at all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROGRAM_DIR = ROOT / "tests" / "conformance"
DEFAULT_CONFIG = PROGRAM_DIR / "devcluster.toml"
GO_FALLBACKS = ("/usr/local/go/bin/go", str(Path.home() / "go" / "bin" / "go"))
BUILD_TIMEOUT_S = 300
RUN_TIMEOUT_S = 600


class ConformanceError(Exception):
    """The program could not be built or run; the message is one line for the user."""


def find_go() -> str:
    """The `go` binary on PATH, else the usual install locations; ConformanceError if none."""
    found = shutil.which("go") or next((p for p in GO_FALLBACKS if os.access(p, os.X_OK)), None)
    if found is None:
        raise ConformanceError(
            "the Go toolchain is not installed (no `go` on PATH or in /usr/local/go/bin); the conformance "
            "checks need Go 1.26+ to build tests/conformance with github.com/hashicorp/nomad/api: "
            "install it from https://go.dev/dl/ or put its bin folder on PATH")
    return found


def build(out_dir: Path) -> Path:
    """Build the program into out_dir; modules come through the Go proxy, pinned by go.sum."""
    go = find_go()
    binary = out_dir / "nomad-conformance"
    env = dict(os.environ, CGO_ENABLED="0")
    proc = subprocess.run([go, "build", "-o", str(binary), "."], cwd=PROGRAM_DIR, env=env,
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        raise ConformanceError(f"`go build` in {PROGRAM_DIR} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return binary


def run_checks(binary: Path, addr: str, token: str | None, python: str) -> int:
    """Run the checks, their lines going straight to our stdout; returns the exit status."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    env["NOMAD_ADDR"] = addr
    if token:
        env["NOMAD_TOKEN"] = token
    try:
        proc = subprocess.run([str(binary), "-python", python], env=env, timeout=RUN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        print(f"conformance: the checks did not finish within {RUN_TIMEOUT_S}s", flush=True)
        return 1
    return proc.returncode


def run_on_devcluster(binary: Path, python: str, config: Path) -> int:
    """Start a devcluster of our own, run the checks against it, stop it (always).

    A devcluster that does not stop by itself (or leaves task processes behind) fails the run."""
    from nomad_triton.devcluster import launcher  # only this mode needs the project installed

    with tempfile.TemporaryDirectory(prefix="nomad-conformance-") as tmp:
        state = Path(tmp) / "state"
        try:
            running = launcher.start(state, config=config, port=0, timeout_s=30)
        except launcher.LaunchError as exc:
            raise ConformanceError(f"devcluster did not start: {exc}") from None
        print(f"conformance: devcluster pid {running.pid} on {running.addr} ({config.name})", flush=True)
        rc = 1
        try:
            rc = run_checks(binary, running.addr, running.token(), python)
        finally:
            result = launcher.stop(Path(running.state_dir), timeout_s=20)
            if result is None or not result.get("graceful") or result.get("killed_groups"):
                print(f"conformance: devcluster did not stop cleanly: {result}", flush=True)
                rc = rc or 1
        return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", help="run against this Nomad (NOMAD_TOKEN from the environment) "
                                       "instead of starting a devcluster")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="devcluster.toml for the devcluster started here (default: ACLs on, a CPU "
                             "and a GPU node)")
    parser.add_argument("--python", default=sys.executable,
                        help="Python the web job's raw_exec task runs (default: this one)")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="nomad-conformance-build-") as out:
            binary = build(Path(out))
            if args.addr:
                return run_checks(binary, args.addr, os.environ.get("NOMAD_TOKEN"), args.python)
            return run_on_devcluster(binary, args.python, args.config)
    except ConformanceError as exc:
        print(f"conformance: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
