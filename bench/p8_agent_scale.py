"""P8: one `autoscale agent` for 100 jobs x 10 allocations on one core, against `autoscale run` per job.

Targets (steady state, after 3 warm-up intervals): evaluation ("decision tick") p95 <= 1 s,
evaluation-interval jitter p95 <= 10 % of the interval, agent RSS <= 300 MB, a new job's policy
acted on <= 2 s after it was registered. Interval 5 s by default (P8_INTERVAL; Nomad Autoscaler's
default is 10 s): 1,000 allocations probed per interval.

Set-up, all on 127.0.0.1:
* 1,000 light Triton endpoints: bench/p4_probe_fanout.py's helper (one process, health routes and
  a recorded PyTriton /metrics page, keep-alive), pinned to the second core.
* A light Nomad API in a helper process (this file, `--nomad`), pinned to the second core: the
  endpoints the agent and `autoscale run` call (scaling policies with blocking queries, job scale
  GET/POST with scaling events, allocations, deployments, variable locks) for 100 jobs whose
  policy is nomad-triton's, each with 10 running allocations on 10 of the endpoints. devcluster
  cannot run 1,000 allocations on this machine; the agent code under test is unchanged.
* The agent runs in its own process pinned to the first core (one core), in-process so each
  evaluation's start and duration are recorded exactly. Halfway through, a 101st job is
  registered whose count (5) is below its policy's min (10): the first evaluation must scale it.
* Baseline: `nomad-triton autoscale run JOB` processes, one per job, against the same Nomad, all
  pinned to the first core. 100 Python processes do not fit beside everything else on this 2-core
  machine, so the baseline runs BASELINE_N (10) of them and extrapolates CPU and memory linearly
  to 100 (said in the output).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
JOBS = int(os.environ.get("P8_JOBS", "100"))
ALLOCS = int(os.environ.get("P8_ALLOCS", "10"))
INTERVAL_S = float(os.environ.get("P8_INTERVAL", "5"))
DURATION_S = float(os.environ.get("P8_DURATION", "45"))
WARMUP_INTERVALS = 3
BASELINE_N = int(os.environ.get("P8_BASELINE", "10"))
BASELINE_S = float(os.environ.get("P8_BASELINE_DURATION", "20"))
NEW_JOB = "new-job"


def pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > core:
        os.sched_setaffinity(0, {core})


def policy_body() -> dict[str, Any]:
    return {"evaluation_interval": f"{int(INTERVAL_S * 1000)}ms", "window": f"{int(INTERVAL_S * 3000)}ms"}


# ---------------------------------------------------------------------------------------- fake Nomad

def nomad_server(ports_file: str) -> None:
    """Helper process: a light Nomad API for the jobs; prints its port, serves until killed."""
    from aiohttp import web

    pin(1)
    ports: list[int] = json.loads(Path(ports_file).read_text())
    jobs: dict[str, dict[str, Any]] = {}
    allocs: dict[str, dict[str, Any]] = {}
    state = {"index": 10, "requests": 0}
    changed = asyncio.Event()
    first_scale: dict[str, float] = {}
    first_read: dict[str, float] = {}
    registered_at: dict[str, float] = {}

    def add_job(name: str, count: int, lo: int, hi: int, port_base: int) -> None:
        state["index"] += 1
        jobs[name] = {"count": count, "min": lo, "max": hi, "events": [], "index": state["index"],
                      "policy_id": f"pol-{name}", "allocs": []}
        for k in range(ALLOCS):
            aid = f"{name}-alloc-{k:02d}"
            port = ports[(port_base + k) % len(ports)]
            allocs[aid] = {"ID": aid, "JobID": name, "TaskGroup": "triton", "DesiredStatus": "run",
                           "ClientStatus": "running", "AllocatedResources": {"Shared": {"Ports": [
                               {"Label": "http", "Value": port, "HostIP": "127.0.0.1"},
                               {"Label": "metrics", "Value": port, "HostIP": "127.0.0.1"}]}}}
            jobs[name]["allocs"].append(aid)
        registered_at[name] = time.time()

    for i in range(JOBS):
        add_job(f"job-{i:03d}", ALLOCS, ALLOCS, ALLOCS, i * ALLOCS)

    def policy(name: str) -> dict[str, Any]:
        j = jobs[name]
        return {"ID": j["policy_id"], "Namespace": "default", "Type": "horizontal", "Enabled": True,
                "Target": {"Namespace": "default", "Job": name, "Group": "triton"}, "Min": j["min"],
                "Max": j["max"], "Policy": policy_body(), "CreateIndex": j["index"], "ModifyIndex": j["index"]}

    def reply(body: Any, index: int | None = None) -> web.Response:
        state["requests"] += 1
        return web.json_response(body, headers={"X-Nomad-Index": str(index or state["index"])})

    async def block(req: web.Request) -> None:
        """Blocking query: wait for a change past ?index= (the agent sends wait in ms)."""
        index = int(req.query.get("index", "0"))
        if index and index >= state["index"]:
            raw = req.query.get("wait", "30s")
            wait = float(raw[:-2]) / 1000 if raw.endswith("ms") else float(raw.rstrip("s"))
            try:
                await asyncio.wait_for(changed.wait(), timeout=wait)
            except TimeoutError:
                pass

    async def job_list(req: web.Request) -> web.Response:
        await block(req)
        return reply([{"ID": n, "ModifyIndex": j["index"], "Stop": False} for n, j in jobs.items()])

    async def alloc_list(req: web.Request) -> web.Response:
        await block(req)
        return reply(list(allocs.values()))

    async def policies(req: web.Request) -> web.Response:
        await block(req)
        stubs = [{k: v for k, v in policy(n).items() if k not in ("Policy", "Min", "Max")} for n in jobs]
        return reply(stubs)

    async def one_policy(req: web.Request) -> web.Response:
        pid = req.match_info["id"]
        for n, j in jobs.items():
            if j["policy_id"] == pid:
                return reply(policy(n), j["index"])
        return web.Response(status=404, text="policy not found")

    def job_of(req: web.Request) -> dict[str, Any] | None:
        return jobs.get(req.match_info["job"])

    async def scale(req: web.Request) -> web.Response:
        name = req.match_info["job"]
        j = job_of(req)
        if j is None:
            return web.Response(status=404, text="job not found")
        if req.method == "GET":
            first_read.setdefault(name, time.time())
            return reply({"JobID": name, "JobStopped": False, "TaskGroups": {"triton": {
                "Desired": j["count"], "Running": j["count"], "Healthy": j["count"], "Events": j["events"][-10:]}}})
        body = await req.json()
        if body.get("Count") is not None:
            j["count"] = int(body["Count"])
            first_scale.setdefault(name, time.time())
            state["index"] += 1  # a scale is a new job version
            j["index"] = state["index"]
            changed.set()
            changed.clear()
        j["events"].append({"Time": time.time_ns(), "Count": body.get("Count"), "Message": body.get("Message"),
                            "Meta": body.get("Meta"), "Error": False})
        return reply({"EvalID": "", "Index": state["index"]})

    async def job(req: web.Request) -> web.Response:
        j = job_of(req)
        if j is None:
            return web.Response(status=404, text="job not found")
        return reply({"ID": req.match_info["job"], "TaskGroups": [
            {"Name": "triton", "Count": j["count"], "Scaling": {"Min": j["min"], "Max": j["max"]}}]})

    async def job_allocs(req: web.Request) -> web.Response:
        j = job_of(req)
        return reply([{k: v for k, v in allocs[a].items() if k != "AllocatedResources"} for a in j["allocs"]]
                     if j else [])

    async def alloc(req: web.Request) -> web.Response:
        return reply(allocs[req.match_info["id"]])

    async def deployment(_: web.Request) -> web.Response:
        return reply(None)

    async def var_lock(req: web.Request) -> web.Response:
        if "lock-acquire" in req.query:
            return reply({"Lock": {"ID": "bench-lock"}})
        return reply({})

    async def admin_register(req: web.Request) -> web.Response:
        body = await req.json()
        add_job(body["name"], body["count"], body["min"], body["max"], 0)
        changed.set()
        changed.clear()
        return web.json_response({"registered_at": registered_at[body["name"]]})

    async def admin_stats(_: web.Request) -> web.Response:
        return web.json_response({"first_scale": first_scale, "first_read": first_read,
                                  "registered_at": registered_at, "requests": state["requests"]})

    async def admin_reset(_: web.Request) -> web.Response:
        state["requests"] = 0
        return web.json_response({})

    app = web.Application()
    app.add_routes([
        web.get("/v1/scaling/policies", policies), web.get("/v1/scaling/policy/{id}", one_policy),
        web.get("/v1/job/{job}/scale", scale), web.post("/v1/job/{job}/scale", scale),
        web.get("/v1/job/{job}/allocations", job_allocs), web.get("/v1/job/{job}/deployment", deployment),
        web.get("/v1/job/{job}", job), web.get("/v1/allocation/{id}", alloc),
        web.get("/v1/jobs", job_list), web.get("/v1/allocations", alloc_list),
        web.put("/v1/var/{path:.*}", var_lock),
        web.post("/admin/register", admin_register), web.get("/admin/stats", admin_stats),
        web.post("/admin/reset", admin_reset),
    ])

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(json.dumps(runner.addresses[0][1]), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------- the agent

def agent_child(addr: str, duration: float, out: str) -> None:
    """Agent process: run the real Agent for `duration`, recording each evaluation's start and length."""
    import logging
    import resource

    from nomad_triton.autoscale.agent import Agent, AgentSettings, _Runner
    from nomad_triton.autoscale.core import StepOutcome
    from nomad_triton.nomad.client import NomadClient

    pin(0)
    logging.basicConfig(level=logging.WARNING)
    records: list[tuple[str, float, float, str | None]] = []

    class Timed(Agent):
        async def evaluate(self, runner: _Runner) -> StepOutcome | None:
            t0 = time.monotonic()
            result = await super().evaluate(runner)
            records.append((runner.spec.target.job, t0, time.monotonic() - t0,
                            result.action if result is not None else "failed"))
            return result

    client = NomadClient.from_env(address=addr)
    agent = Timed(client, AgentSettings(lock_ttl_s=15.0, probe_timeout_s=0.8, tune_gc=True))
    c0, w0 = time.process_time(), time.monotonic()

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(duration, stop.set)
        await agent.run(stop)

    asyncio.run(main())
    cpu, wall = time.process_time() - c0, time.monotonic() - w0
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(out).write_text(json.dumps({"records": records, "cpu_s": cpu, "max_rss_mb": rss_kb / 1024,
                                     "wall_s": wall}))


# ---------------------------------------------------------------------------------------- the bench

def proc_cpu_rss(pid: int) -> tuple[float, float]:
    """(user+system CPU seconds, resident MB) of a live process, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return cpu, rss


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] if s else float("nan")


def spawn_line(args: list[str], timeout: float = 60) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line and time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{args[1:3]} did not start")
    return proc, line.decode().strip()


def main() -> int:
    import tempfile

    import httpx

    sys.path.insert(0, str(HERE))
    from p4_probe_fanout import raise_nofile

    raise_nofile(JOBS * ALLOCS * 4 + 1024)
    helpers: list[subprocess.Popen] = []
    tmp = Path(tempfile.mkdtemp(prefix="p8-"))
    try:
        ep, line = spawn_line([sys.executable, str(HERE / "p4_probe_fanout.py"), "--serve", str(JOBS * ALLOCS)])
        helpers.append(ep)
        (tmp / "ports.json").write_text(line)
        nomad, port = spawn_line([sys.executable, __file__, "--nomad", str(tmp / "ports.json")])
        helpers.append(nomad)
        addr = f"http://127.0.0.1:{port}"
        admin = httpx.Client(base_url=addr, timeout=10)

        # The agent: DURATION_S on one core; the new job is registered halfway.
        out = tmp / "agent.json"
        agent = subprocess.Popen([sys.executable, __file__, "--agent", addr, str(DURATION_S), str(out)],
                                 start_new_session=True)
        helpers.append(agent)
        time.sleep(DURATION_S / 2)
        registered = admin.post("/admin/register", json={"name": NEW_JOB, "count": 5, "min": ALLOCS,
                                                         "max": ALLOCS}).json()["registered_at"]
        agent.wait(timeout=DURATION_S + 60)
        res = json.loads(out.read_text())
        stats = admin.get("/admin/stats").json()
        agent_requests = stats["requests"]

        # Baseline: BASELINE_N `autoscale run` processes on the same core, same Nomad.
        admin.post("/admin/reset")
        cli = [sys.executable, "-m", "nomad_triton.cli.main", "autoscale", "run"]
        env = {**os.environ, "NOMAD_ADDR": addr}
        runs = [subprocess.Popen([*cli, f"job-{i:03d}", "--interval", str(INTERVAL_S), "--duration", str(BASELINE_S)],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True, preexec_fn=lambda: pin(0)) for i in range(BASELINE_N)]
        helpers.extend(runs)
        time.sleep(BASELINE_S * 0.9)
        base = [proc_cpu_rss(p.pid) for p in runs if p.poll() is None]
        for p in runs:
            p.wait(timeout=BASELINE_S + 30)
        base_requests = admin.get("/admin/stats").json()["requests"]
    finally:
        for h in helpers:
            if h.poll() is None:
                os.killpg(h.pid, signal.SIGKILL)
                h.wait(timeout=10)

    records = res["records"]
    t_start = min(r[1] for r in records) if records else 0.0
    first_evals = {}
    for job, start, dur, _ in records:
        first_evals.setdefault(job, start + dur)
    startup = max((t for j, t in first_evals.items() if j != NEW_JOB), default=float("nan")) - t_start
    # Steady state: the first WARMUP_INTERVALS (connections opened, every status read once) apart.
    steady = [r for r in records if r[0] != NEW_JOB and r[1] >= t_start + WARMUP_INTERVALS * INTERVAL_S]
    ticks = [d for _, _, d, _ in steady]
    by_job: dict[str, list[float]] = {}
    for job, start, _, _ in sorted(steady, key=lambda r: r[1]):
        by_job.setdefault(job, []).append(start)
    jitter = [abs((b - a) - INTERVAL_S) / INTERVAL_S for starts in by_job.values()
              for a, b in zip(starts, starts[1:], strict=False)]
    failed = sum(1 for r in records if r[3] == "failed")
    acted = stats["first_scale"].get(NEW_JOB)
    first_eval = stats["first_read"].get(NEW_JOB)
    act_s = (acted - registered) if acted else float("inf")
    agent_cpu = res["cpu_s"] / res["wall_s"]
    if len(base) < BASELINE_N:
        print(f"only {len(base)} of {BASELINE_N} baseline processes were alive to measure", file=sys.stderr)
    base_cpu = sum(c for c, _ in base) / (BASELINE_S * 0.9) * (JOBS / max(len(base), 1))
    base_rss = sum(r for _, r in base) * (JOBS / max(len(base), 1))
    print(f"agent: {JOBS} jobs x {ALLOCS} allocations, interval {INTERVAL_S:g} s, {DURATION_S:g} s on one core: "
          f"{len(records)} evaluations ({failed} failed), {len(ticks)} in steady state")
    print(f"  start-up: every target evaluated once within {startup:.1f} s; the first {WARMUP_INTERVALS} intervals "
          f"(connections opened, statuses read) are left out of the steady-state figures below")
    print(f"  decision tick p50 {pct(ticks, 0.5) * 1000:.0f} ms, p95 {pct(ticks, 0.95) * 1000:.0f} ms, "
          f"max {max(ticks) * 1000:.0f} ms (target p95 <= 1000 ms)")
    print(f"  interval jitter p50 {pct(jitter, 0.5) * 100:.1f} %, p95 {pct(jitter, 0.95) * 100:.1f} % of the "
          f"interval (target <= 10 %)")
    print(f"  new job: first evaluation {(first_eval - registered) if first_eval else float('inf'):.2f} s, "
          f"scaled {act_s:.2f} s after registration (target <= 2 s)")
    print(f"  CPU {agent_cpu * 100:.0f} % of one core, max RSS {res['max_rss_mb']:.0f} MB (target <= 300 MB), "
          f"{agent_requests / res['wall_s']:.0f} Nomad requests/s")
    print(f"baseline: `autoscale run` x {len(base)} measured, extrapolated x{JOBS / max(len(base), 1):.0f} to {JOBS}: "
          f"CPU {base_cpu * 100:.0f} % of one core, RSS {base_rss:.0f} MB, "
          f"{base_requests / BASELINE_S * JOBS / max(len(base), 1):.0f} Nomad requests/s")
    if base:
        print(f"P8 ratios agent/baseline: CPU {agent_cpu / base_cpu:.2f}, memory {res['max_rss_mb'] / base_rss:.3f}; "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    ok = (pct(ticks, 0.95) <= 1.0 and pct(jitter, 0.95) <= 0.10 and res["max_rss_mb"] <= 300 and act_s <= 2.0)
    print("P8 targets met" if ok else "P8 targets NOT met")
    return 0 if ticks and acted else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--nomad":
        nomad_server(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "--agent":
        agent_child(sys.argv[2], float(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(main())
