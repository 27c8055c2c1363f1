"""Generate examples/models/relu_onnx/model.onnx: y = Relu(x @ W + b), float32 [N, 16] -> [N, 4].

Built with onnx.helper from fixed, seeded weights (no download); the file is under 1 KiB and checked
in, and tests regenerate it to prove the generator and the checked-in file agree.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DEFAULT_OUT = Path(__file__).parent / "models" / "relu_onnx" / "model.onnx"


def weights(seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((16, 4)) / 4.0).astype(np.float32)
    b = np.array([0.05, -0.05, 0.1, 0.0], dtype=np.float32)
    return w, b


def build(seed: int = 4) -> onnx.ModelProto:
    w, b = weights(seed)
    graph = helper.make_graph(
        nodes=[
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["pre"]),
            helper.make_node("Relu", ["pre"], ["y"]),
        ],
        name="relu_linear",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    # opset 17 / IR 8: loadable by every onnxruntime >= 1.14, not only the newest.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="nomad-triton-examples")
    onnx.checker.check_model(model)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build(), args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
