"""P6: `serve` throughput with dynamic batching vs without, and cold start to all-models-ready.

What it measures, honestly:
- One `nomad-triton serve` process (real PyTriton + tritonserver, CPU, loopback) serving copies of the
  example MLP (examples/models/mlp): `*_batched` (max_batch_size 64, dynamic batching) and
  `*_unbatched` (max_batch_size 1: every request is its own execution).
- 16 concurrent gRPC clients (threads, tritonclient.grpc, one [1, 16] float32 request at a time each)
  drive each model for a fixed duration, one model after the other in the same run.
- Scenario "device": the model sleeps `call_overhead_ms` per execution, standing in for the fixed
  per-call cost on a GPU (kernel launches, host<->device sync) that batching amortises. The numpy
  math itself is microseconds. This is the headline ratio (target >= 4x).
- Scenario "cpu-numpy": no simulated cost, so the only per-call cost is PyTriton's own proxying
  (stub -> ZeroMQ -> Python). Shown so the headline figure is not mistaken for a CPU numpy speedup.
- Client and server share the same (small) machine, so absolute req/s are a floor, ratios are the point.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as tgrpc
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nomad_triton.server.testing import ServerProcess  # noqa: E402

CLIENTS = 16
DURATION_S = float(os.environ.get("P6_DURATION_S", "10"))
OVERHEAD_MS = 2.0
BASE = ROOT / "examples" / "models" / "mlp"


def _model(repo: Path, name: str, batched: bool, overhead_ms: float) -> None:
    folder = repo / name
    shutil.copytree(BASE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    text = (BASE / "model.toml").read_text()
    text = text.replace("call_overhead_ms = 0.0", f"call_overhead_ms = {overhead_ms}")
    if not batched:
        text = text.replace("max_batch_size = 64", "max_batch_size = 1")
        text = text.split("[dynamic_batching]")[0] + "[[inputs]]" + text.split("[[inputs]]", 1)[1]
    else:
        text = text.replace("max_queue_delay_us = 1000", "max_queue_delay_us = 2000")
    (folder / "model.toml").write_text(text)


def drive(url: str, model: str, duration_s: float) -> tuple[float, int, int]:
    """16 closed-loop clients for duration_s; returns (req/s, ok, errors)."""
    stop_at = time.monotonic() + duration_s
    counts = [0] * CLIENTS
    errors = [0] * CLIENTS
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)

    def client(i: int) -> None:
        c = tgrpc.InferenceServerClient(url)
        inp = tgrpc.InferInput("x", [1, 16], "FP32")
        inp.set_data_from_numpy(x)
        out = [tgrpc.InferRequestedOutput("y")]
        try:
            while time.monotonic() < stop_at:
                try:
                    c.infer(model, [inp], outputs=out, client_timeout=30)
                    counts[i] += 1
                except Exception:  # counted: a benchmark that hides errors lies
                    errors[i] += 1
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=duration_s + 60)
    elapsed = time.monotonic() - t0
    return sum(counts) / elapsed, sum(counts), sum(errors)


def avg_batch(metrics_port: int, model: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    vals: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("model") == model and fam.name in ("nv_inference_count", "nv_inference_exec_count"):
                vals[fam.name] = s.value
    return vals.get("nv_inference_count", 0) / max(vals.get("nv_inference_exec_count", 0), 1)


def cold_start(tmp: Path) -> float:
    """Seconds from process start to /v2/health/ready == 200 (strict: both example models loaded)."""
    with ServerProcess(ROOT / "examples" / "models", tmp / "cold.log") as srv:
        return srv.wait_ready(timeout_s=120)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="p6-") as tmpdir:
        tmp = Path(tmpdir)
        cold = [cold_start(tmp) for _ in range(2)]
        repo = tmp / "models"
        for scenario, overhead in (("device", OVERHEAD_MS), ("cpu", 0.0)):
            _model(repo, f"{scenario}_batched", True, overhead)
            _model(repo, f"{scenario}_unbatched", False, overhead)
        results: dict[str, tuple[float, int, int]] = {}
        with ServerProcess(repo, tmp / "bench.log") as srv:
            srv.wait_ready(timeout_s=120)
            for name in ("device_unbatched", "device_batched", "cpu_unbatched", "cpu_batched"):
                drive(srv.grpc_url, name, 1.0)  # warm-up: connections, first executions
                results[name] = drive(srv.grpc_url, name, DURATION_S)
            batches = {name: avg_batch(srv.metrics_port, name) for name in results}
    print(f"P6 serve: {CLIENTS} concurrent gRPC clients, {DURATION_S:.0f} s per model, one [1,16] fp32 request each")
    for name, (rps, ok, err) in results.items():
        print(f"  {name:<17} {rps:8.1f} req/s  ({ok} ok, {err} errors, avg executed batch {batches[name]:.1f})")
    dev = results["device_batched"][0] / max(results["device_unbatched"][0], 1e-9)
    cpu = results["cpu_batched"][0] / max(results["cpu_unbatched"][0], 1e-9)
    print(f"  ratio device (fixed {OVERHEAD_MS} ms per call): dynamic batching / none = {dev:.2f}x  (target >= 4x)")
    print(f"  ratio cpu-numpy (PyTriton proxy cost only):     dynamic batching / none = {cpu:.2f}x")
    print(f"  cold start to all models ready: {min(cold):.2f} s best, {max(cold):.2f} s worst of {len(cold)}"
          f"  (target <= 5 s)")
    failed = any(err for _, _, err in results.values()) or any(ok == 0 for _, ok, _ in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
