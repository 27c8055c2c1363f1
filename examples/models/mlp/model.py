"""Example Python entry point: a fixed-weight 16 -> 64 -> 4 ReLU MLP on numpy batches.

Weights come from a seeded generator so every replica (and the tests) compute identical results.
"""

from __future__ import annotations

import time

import numpy as np

_RNG = np.random.default_rng(16)
W1 = _RNG.standard_normal((16, 64)).astype(np.float32) / 4.0
B1 = np.linspace(-0.5, 0.5, 64, dtype=np.float32)
W2 = _RNG.standard_normal((64, 4)).astype(np.float32) / 8.0
B2 = np.array([0.1, -0.1, 0.2, -0.2], dtype=np.float32)


def forward(x: np.ndarray) -> np.ndarray:
    """The model itself, importable by tests to compute expected outputs."""
    hidden = np.maximum(x @ W1 + B1, 0.0)
    return (hidden @ W2 + B2).astype(np.float32)


def infer(inputs: dict[str, np.ndarray], call_overhead_ms: float = 0.0) -> dict[str, np.ndarray]:
    """Called once per (dynamically batched) Triton execution with x of shape [N, 16]."""
    if call_overhead_ms > 0:
        time.sleep(call_overhead_ms / 1000.0)  # fixed per call, independent of N: what batching saves
    return {"y": forward(inputs["x"])}
