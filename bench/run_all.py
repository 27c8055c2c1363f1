"""Run every benchmark script bench/p*_*.py in order; each prints its own figures and ratios.

A benchmark script is a plain Python program with a `main()`; it must bind only 127.0.0.1,
bound its own run time, stop every process it starts, and exit non-zero if it could not measure.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    selected = sys.argv[1:]
    failures = 0
    for script in sorted(here.glob("p[0-9]_*.py")):
        if selected and not any(script.name.startswith(s) for s in selected):
            continue
        print(f"\n=== {script.name} ===", flush=True)
        rc = subprocess.call([sys.executable, str(script)])
        if rc != 0:
            print(f"!!! {script.name} exited {rc}", flush=True)
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
