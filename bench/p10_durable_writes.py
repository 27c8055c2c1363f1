"""P10: what does durability cost? Job registrations per second on devcluster, side by side.

Setup: three devcluster subprocesses (loopback, free ports, temp state dirs) that differ only in
`[server] durability`: "none" (state in memory, as before devcluster was durable), "process"
(the default: SQLite WAL, a commit per state change, survives kill -9) and "power" (fsync per
commit). Each gets the same burst: REGISTRATIONS job registrations (count 0, so only the state
path is measured: job + version + evaluation in one transaction, then the scheduler's plan apply)
from one client, then the same from CLIENTS concurrent clients, ROUNDS times with the modes
interleaved (a shared machine's load then hits all modes alike). Prints the median throughput,
p50/p95 latency per mode and the ratios against "none". Bounded run time; everything it starts
is stopped.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from nomad_triton.devcluster import launcher

REGISTRATIONS, CLIENTS, ROUNDS, DEADLINE_S = 200, 4, 3, 400.0
MODES = ("none", "process", "power")


def job(job_id: str) -> dict:
    task = {"Name": "t", "Driver": "raw_exec", "Config": {"command": "sleep", "args": ["300"]},
            "Resources": {"CPU": 10, "MemoryMB": 10}}
    return {"Job": {"ID": job_id, "Name": job_id, "Type": "service", "Datacenters": ["dc1"],
                    "TaskGroups": [{"Name": "g", "Count": 0, "Tasks": [task]}]}}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def burst(addr: str, prefix: str, clients: int, deadline: float) -> tuple[float, list[float]]:
    """(registrations per second, latencies) for REGISTRATIONS registrations over `clients`."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_client = REGISTRATIONS // clients

    def worker(w: int) -> None:
        with httpx.Client(base_url=addr, timeout=30) as c:
            for i in range(per_client):
                if time.monotonic() > deadline:
                    raise SystemExit("p8: deadline passed")
                t0 = time.perf_counter()
                r = c.post("/v1/jobs", json=job(f"{prefix}-{w}-{i:04d}"))
                dt = time.perf_counter() - t0
                r.raise_for_status()
                with lock:
                    latencies.append(dt)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if len(latencies) != per_client * clients:
        raise SystemExit("p8: some registrations failed")
    return len(latencies) / elapsed, latencies


def main() -> int:
    deadline = time.monotonic() + DEADLINE_S
    rates: dict[tuple[str, int], list[float]] = {}
    latencies: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="p8-") as tmp:
        clusters = {}
        try:
            for mode in MODES:
                cfg = Path(tmp) / f"{mode}.toml"
                cfg.write_text(f'[server]\ndurability = "{mode}"\n')
                clusters[mode] = launcher.start(Path(tmp) / mode, config=cfg, port=0, timeout_s=60)
            for mode in MODES:
                burst(clusters[mode].addr, "warm", 1, deadline)
            for rnd in range(ROUNDS):
                for clients in (1, CLIENTS):
                    for mode in MODES:  # modes interleaved so machine load hits all alike
                        rate, lat = burst(clusters[mode].addr, f"r{rnd}c{clients}", clients, deadline)
                        rates.setdefault((mode, clients), []).append(rate)
                        latencies.setdefault((mode, clients), []).extend(lat)
        finally:
            for mode in clusters:
                launcher.stop(Path(tmp) / mode)
    print(f"P10 job registrations ({REGISTRATIONS} per run, median of {ROUNDS} runs, count-0 jobs, "
          "devcluster subprocess)")
    print(f"{'durability':<10} {'clients':>7} {'reg/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'vs none':>8}")
    for clients in (1, CLIENTS):
        base = statistics.median(rates[("none", clients)])
        for mode in MODES:
            rate, lat = statistics.median(rates[(mode, clients)]), latencies[(mode, clients)]
            print(f"{mode:<10} {clients:>7} {rate:>8.0f} {statistics.median(lat) * 1000:>8.1f} "
                  f"{pct(lat, 0.95) * 1000:>8.1f} {rate / base:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
