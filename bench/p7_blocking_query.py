"""P7: how fast does a Nomad blocking query wake up on devcluster under a realistic state size?

Setup: devcluster (subprocess, loopback, free port) with 100 jobs / 500 running allocations of a
raw_exec `sleep 300` task. Then, for >= 50 samples, a client waits on `GET /v1/jobs?index=N`
while another registers a new (count 0) job; we measure from the moment the register request
is sent to the moment the waiting query returns. Side by side, a 250 ms poller watches for the
same change, which is what a client without blocking queries would do.
Prints p50/p95 for both and the ratio. Bounded run time; everything it starts is stopped.
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

JOBS, PER_JOB, SAMPLES, POLL_S = 100, 5, 60, 0.25
DEADLINE_S = 420.0

CONFIG = """
[server]
event_heartbeat_s = 10
[[nodes]]
name = "bench-1"
cpu_mhz = 400000
memory_mb = 400000
"""


def sleep_job(job_id: str, count: int) -> dict:
    task = {"Name": "sleep", "Driver": "raw_exec", "Config": {"command": "sleep", "args": ["300"]},
            "Resources": {"CPU": 10, "MemoryMB": 10}}
    return {"Job": {"ID": job_id, "Name": job_id, "Type": "service", "Datacenters": ["dc1"],
                    "TaskGroups": [{"Name": "main", "Count": count, "Tasks": [task]}]}}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def wait_running(http: httpx.Client, want: int, deadline: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        allocs = http.get("/v1/allocations").json()
        if sum(1 for a in allocs if a["ClientStatus"] == "running") >= want:
            return time.monotonic() - t0
        time.sleep(0.5)
    raise SystemExit(f"p7: fewer than {want} allocations running before the deadline")


def one_sample(http: httpx.Client, addr: str, i: int, deadline: float) -> tuple[float, float]:
    """(blocking wake-up, polling detection) seconds after sending one job registration."""
    index = int(http.get("/v1/jobs").headers["X-Nomad-Index"])
    job_id = f"tick-{i:03d}"
    marks: dict[str, float] = {}
    sent = threading.Event()

    def block() -> None:
        with httpx.Client(base_url=addr, timeout=60) as c:
            c.get("/v1/jobs", params={"index": index, "wait": "30s"})
            marks["blocking"] = time.monotonic()

    def poll() -> None:
        with httpx.Client(base_url=addr, timeout=10) as c:
            sent.wait(10)
            time.sleep(POLL_S * (i % 10) / 10)  # spread the poller's phase over its interval
            while time.monotonic() < deadline:
                if any(j["ID"] == job_id for j in c.get("/v1/jobs", params={"prefix": "tick-"}).json()):
                    marks["polling"] = time.monotonic()
                    return
                time.sleep(POLL_S)

    tb, tp = threading.Thread(target=block), threading.Thread(target=poll)
    tb.start()
    time.sleep(0.05)  # the blocking query is now parked on the server
    tp.start()
    marks["sent"] = time.monotonic()
    sent.set()
    http.post("/v1/jobs", json=sleep_job(job_id, 0)).raise_for_status()
    tb.join(40)
    tp.join(40)
    if "blocking" not in marks or "polling" not in marks:
        raise SystemExit("p7: a sample did not complete")
    return marks["blocking"] - marks["sent"], marks["polling"] - marks["sent"]


def measure(http: httpx.Client, addr: str, deadline: float) -> tuple[list[float], list[float]]:
    blocking, polling = [], []
    for i in range(SAMPLES):
        if time.monotonic() > deadline:
            raise SystemExit("p7: deadline reached while sampling")
        b, p = one_sample(http, addr, i, deadline)
        blocking.append(b)
        polling.append(p)
    return blocking, polling


def main() -> int:
    deadline = time.monotonic() + DEADLINE_S
    with tempfile.TemporaryDirectory(prefix="p7-") as tmp:
        cfg = Path(tmp) / "devcluster.toml"
        cfg.write_text(CONFIG)
        running = launcher.start(Path(tmp) / "state", config=cfg, port=0, timeout_s=30)
        try:
            with httpx.Client(base_url=running.addr, timeout=30) as http:
                t0 = time.monotonic()
                for j in range(JOBS):
                    http.post("/v1/jobs", json=sleep_job(f"bench-{j:03d}", PER_JOB)).raise_for_status()
                register_s = time.monotonic() - t0
                place_s = wait_running(http, JOBS * PER_JOB, deadline)
                print(f"registered {JOBS} jobs in {register_s:.2f}s; {JOBS * PER_JOB} allocations running "
                      f"{place_s:.1f}s later")
                blocking, polling = measure(http, running.addr, deadline)
        finally:
            result = launcher.stop(Path(tmp) / "state", timeout_s=60)
    b50, b95, p50, p95 = pct(blocking, 0.5), pct(blocking, 0.95), pct(polling, 0.5), pct(polling, 0.95)
    print(f"samples: {len(blocking)} (state: {JOBS} jobs, {JOBS * PER_JOB} allocations)")
    print(f"blocking query wake-up after change : p50 {b50 * 1000:7.1f} ms   p95 {b95 * 1000:7.1f} ms   "
          f"mean {statistics.mean(blocking) * 1000:7.1f} ms")
    print(f"{POLL_S * 1000:.0f} ms polling sees the change      : p50 {p50 * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms")
    print(f"ratio polling/blocking: p50 x{p50 / b50:.1f}   p95 x{p95 / b95:.1f}")
    print(f"cleanup: {result}")
    if result and result.get("remaining_groups"):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
