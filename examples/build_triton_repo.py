"""Generate the binary model files of examples/triton-repo (a repository in Triton's layout).

- linear_onnx/1/model.onnx and linear_onnx/2/model.onnx: y = Relu(x @ W + b), seeded weights
  (VERSION_SEEDS), so the two versions answer differently and tests can compute both.
- torchscript / savedmodel models are written only when their framework is installed (the optional
  `torch` / `tensorflow` extras); see docs/triton-repository.md.

The config.pbtxt files and the python-backend add_sub/1/model.py are text, checked in as written.
Run: python examples/build_triton_repo.py [--out DIR]   (tests regenerate and compare the bytes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples.build_onnx_model import build  # noqa: E402

REPO = Path(__file__).parent / "triton-repo"
VERSION_SEEDS = {1: 4, 2: 5}


def write(out: Path) -> list[Path]:
    written = []
    for version, seed in VERSION_SEEDS.items():
        path = out / "linear_onnx" / str(version) / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(build(seed), path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO)
    args = parser.parse_args(argv)
    for path in write(args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
