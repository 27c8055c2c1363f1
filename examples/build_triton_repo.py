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


_CONFIG = """name: "{name}"
platform: "{platform}"
max_batch_size: 64
input [{{ name: "x" data_type: TYPE_FP32 dims: [ 16 ] }}]
output [{{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] }}]
dynamic_batching {{ max_queue_delay_microseconds: 500 }}
"""


def write_frameworks(out: Path, seed: int = 4) -> list[Path]:
    """torch_linear (TorchScript) and tf_linear (SavedModel): the same function as linear_onnx v1.

    Needs the optional `torch` / `tensorflow` extras, so these models are not part of the checked-in
    examples/triton-repo (serve refuses them without the extras); write them elsewhere with
    `--frameworks --out DIR`.
    """
    import tensorflow as tf
    import torch

    from examples.build_onnx_model import weights

    w, b = weights(seed)
    written = []

    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.from_numpy(w), requires_grad=False)
            self.b = torch.nn.Parameter(torch.from_numpy(b), requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x @ self.w + self.b)

    path = out / "torch_linear" / "1" / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(Linear()).save(str(path))
    (out / "torch_linear" / "config.pbtxt").write_text(_CONFIG.format(name="torch_linear", platform="pytorch_libtorch"))
    written.append(path)

    class TfLinear(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w, self.b = tf.constant(w), tf.constant(b)

        @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": tf.nn.relu(tf.matmul(x, self.w) + self.b)}

    module = TfLinear()
    path = out / "tf_linear" / "1" / "model.savedmodel"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    (out / "tf_linear" / "config.pbtxt").write_text(_CONFIG.format(name="tf_linear", platform="tensorflow_savedmodel"))
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO)
    parser.add_argument("--frameworks", action="store_true",
                        help="also write the TorchScript and SavedModel examples (needs the torch and tensorflow extras)")
    args = parser.parse_args(argv)
    paths = write(args.out) + (write_frameworks(args.out) if args.frameworks else [])
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
