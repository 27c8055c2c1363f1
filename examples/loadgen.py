"""Open-loop load generator for a Triton model (e.g. the examples, or anything `nomad-triton serve` runs).

    python examples/loadgen.py --url 127.0.0.1:8000 --model mlp --phase 20s@50rps --phase 10s@0
    python examples/loadgen.py --nomad-job triton-cpu --model mlp --phase 1m@80 --json

Why open loop: an autoscaler is judged on what happens when arrivals outpace capacity. A closed
loop (N clients waiting for answers) slows down with the server and hides the overload; here
requests are sent on a fixed schedule whatever the latency, up to `--concurrency` in flight
(beyond that a request is counted as dropped, so the process itself stays bounded).

Targets are `--url host:port` (Triton HTTP, no scheme; repeat to round-robin) and/or
`--nomad-job JOB`: the job's running allocations' `http` ports, re-read from Nomad (NOMAD_ADDR,
NOMAD_TOKEN) every `--refresh` seconds, so replicas added by the autoscaler get traffic too.
Inputs are random tensors built from the model's metadata (batch size 1).

Output: one line per phase (sent, ok, errors, dropped, achieved rate, latency p50/p95/p99 in ms);
`--json` makes every line a JSON object, adds a `phase_start` line (wall-clock `ts`) as each phase
begins and a final summary. SIGTERM/SIGINT end the current
phase early and still print the report (exit 0). Exit 2 on bad arguments, 1 if the model's
metadata cannot be read from any target.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.http.aio as triton_http
from tritonclient.utils import triton_to_np_dtype

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "": 1.0}
_PHASE = re.compile(r"^\s*(\d+(?:\.\d+)?)(ms|s|m|)\s*@\s*(\d+(?:\.\d+)?)\s*(?:rps|/s)?\s*$")


@dataclass(frozen=True)
class Phase:
    duration_s: float
    rate: float  # requests per second; 0 = idle

    @classmethod
    def parse(cls, text: str) -> Phase:
        """`20s@50rps`, `500ms@10`, `1m@0`: duration then request rate."""
        m = _PHASE.match(text)
        if not m:
            raise ValueError(f"--phase {text!r}: expected DURATION@RATE, e.g. 20s@50rps")
        duration = float(m.group(1)) * _UNITS[m.group(2)]
        if duration <= 0:
            raise ValueError(f"--phase {text!r}: duration must be > 0")
        return cls(duration, float(m.group(3)))


@dataclass
class PhaseStats:
    index: int
    rate: float
    planned_s: float
    elapsed_s: float = 0.0
    sent: int = 0
    ok: int = 0
    errors: int = 0
    dropped: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    first_error: str | None = None

    def report(self) -> dict[str, Any]:
        lat = np.array(self.latencies_ms) if self.latencies_ms else None
        pct = {f"p{p}_ms": (round(float(np.percentile(lat, p)), 2) if lat is not None else None) for p in (50, 95, 99)}
        return {
            "phase": self.index, "target_rps": self.rate, "elapsed_s": round(self.elapsed_s, 2),
            "sent": self.sent, "ok": self.ok, "errors": self.errors, "dropped": self.dropped,
            "achieved_rps": round(self.ok / self.elapsed_s, 2) if self.elapsed_s > 0 else 0.0,
            **pct, "first_error": self.first_error,
        }


class Targets:
    """Round-robin over Triton HTTP endpoints, one aiohttp-backed client each."""

    def __init__(self, urls: list[str], timeout_s: float, nomad_job: str | None, refresh_s: float) -> None:
        self.static = list(urls)
        self.timeout_s = timeout_s
        self.nomad_job = nomad_job
        self.refresh_s = refresh_s
        self.clients: dict[str, triton_http.InferenceServerClient] = {}
        self.urls: list[str] = []
        self._cycle: Any = iter(())
        self._refreshed = -1e9

    def _set(self, urls: list[str]) -> None:
        urls = sorted(set(urls))
        if urls != self.urls:
            self.urls = urls
            self._cycle = itertools.cycle(urls)

    async def refresh(self, force: bool = False) -> None:
        if not self.nomad_job:
            self._set(self.static)
            return
        now = time.monotonic()
        if not force and now - self._refreshed < self.refresh_s:
            return
        self._refreshed = now
        try:
            found = await asyncio.to_thread(_nomad_urls, self.nomad_job)
        except Exception as exc:  # noqa: BLE001 - Nomad trouble keeps the last known targets
            print(f"loadgen: nomad discovery failed: {exc}", file=sys.stderr)
            return
        self._set(self.static + found)

    def next(self) -> tuple[str, triton_http.InferenceServerClient] | None:
        if not self.urls:
            return None
        url = next(self._cycle)
        if url not in self.clients:
            self.clients[url] = triton_http.InferenceServerClient(url, conn_timeout=self.timeout_s)
        return url, self.clients[url]

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()


def _nomad_urls(job: str) -> list[str]:
    """The `http` host:port of the job's running allocations, through the project's Nomad facade."""
    from nomad_triton.nomad.client import NomadClient
    from nomad_triton.probe.discovery import job_endpoints

    return [e.http for e in job_endpoints(NomadClient.from_env(), job)]


async def _inputs(targets: Targets, model: str) -> list[triton_http.InferInput]:
    """Random batch-1 inputs shaped from the model's metadata (any target that answers)."""
    last: Exception | None = None
    for _ in range(len(targets.urls) or 1):
        picked = targets.next()
        if picked is None:
            break
        try:
            meta = await picked[1].get_model_metadata(model)
        except Exception as exc:  # noqa: BLE001 - refused, timed out, not ready: try the next target
            last = exc
            continue
        rng = np.random.default_rng(0)
        out = []
        for spec in meta["inputs"]:
            shape = [1 if int(d) < 0 else int(d) for d in spec["shape"]]
            dtype = triton_to_np_dtype(spec["datatype"])
            if spec["datatype"] == "BYTES":
                data = np.full(shape, b"x", dtype=np.object_)
            else:
                data = rng.random(shape).astype(dtype)
            tensor = triton_http.InferInput(spec["name"], shape, spec["datatype"])
            tensor.set_data_from_numpy(data)
            out.append(tensor)
        return out
    raise RuntimeError(f"cannot read metadata of model {model!r} from {targets.urls or 'any target'}: {last}")


async def _one(targets: Targets, model: str, inputs: list[Any], st: PhaseStats) -> None:
    picked = targets.next()
    if picked is None:
        st.errors += 1
        st.first_error = st.first_error or "no targets"
        return
    url, client = picked
    t0 = time.perf_counter()
    try:
        await client.infer(model, inputs)
    except Exception as exc:  # noqa: BLE001 - any failure is a failed request, counted, not fatal
        st.errors += 1
        st.first_error = st.first_error or f"{url}: {type(exc).__name__}: {str(exc)[:200]}"
        return
    st.ok += 1
    st.latencies_ms.append((time.perf_counter() - t0) * 1000.0)


async def run(phases: list[Phase], targets: Targets, model: str, concurrency: int, as_json: bool,
              stop: asyncio.Event) -> list[PhaseStats]:
    await targets.refresh(force=True)
    inputs = await _inputs(targets, model)
    inflight: set[asyncio.Task[None]] = set()
    results = []
    for i, phase in enumerate(phases):
        st = PhaseStats(i, phase.rate, phase.duration_s)
        start = time.monotonic()
        if as_json:  # lets a harness time its measurements from the moment the load changed
            print(json.dumps({"event": "phase_start", "phase": i, "target_rps": phase.rate, "ts": time.time()}),
                  flush=True)
        end = start + phase.duration_s
        n = 0
        while not stop.is_set():
            due = start + n / phase.rate if phase.rate > 0 else end
            if due >= end:
                await _sleep_until(end, stop)
                break
            await _sleep_until(due, stop)
            if stop.is_set():
                break
            await targets.refresh()
            n += 1
            if len(inflight) >= concurrency:
                st.dropped += 1
                continue
            st.sent += 1
            task = asyncio.create_task(_one(targets, model, inputs, st))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        st.elapsed_s = time.monotonic() - start
        if i == len(phases) - 1 or stop.is_set():
            # Requests of the last phase finish before its report (bounded by the client timeout).
            if inflight:
                await asyncio.wait(set(inflight), timeout=targets.timeout_s + 1)
        _print(st.report(), as_json)
        results.append(st)
        if stop.is_set():
            break
    return results


async def _sleep_until(t: float, stop: asyncio.Event) -> None:
    """Sleep until monotonic time `t`, waking early (within 0.1 s) when `stop` is set."""
    while not stop.is_set():
        delay = t - time.monotonic()
        if delay <= 0:
            return
        await asyncio.sleep(min(delay, 0.1))


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report), flush=True)
        return
    fmt = "-" if report["p50_ms"] is None else f"{report['p50_ms']}/{report['p95_ms']}/{report['p99_ms']} ms"
    print(f"phase {report['phase']}: {report['target_rps']:g} rps for {report['elapsed_s']} s: "
          f"sent {report['sent']} ok {report['ok']} errors {report['errors']} dropped {report['dropped']} "
          f"achieved {report['achieved_rps']} rps, latency p50/p95/p99 {fmt}"
          + (f"; first error: {report['first_error']}" if report["first_error"] else ""), flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Open-loop load generator for a Triton model (HTTP).")
    p.add_argument("--url", action="append", default=[], help="Triton HTTP host:port (repeatable).")
    p.add_argument("--nomad-job", help="Also send to this Nomad job's running allocations (http port).")
    p.add_argument("--refresh", type=float, default=2.0, help="Seconds between Nomad target refreshes.")
    p.add_argument("--model", default="mlp", help="Model name.")
    p.add_argument("--phase", action="append", default=[], help="DURATION@RATE, e.g. 20s@50rps (repeatable).")
    p.add_argument("--concurrency", type=int, default=64, help="Most requests in flight; more are dropped.")
    p.add_argument("--timeout", type=float, default=10.0, help="Per-request timeout in seconds.")
    p.add_argument("--json", action="store_true", help="JSON lines output.")
    args = p.parse_args(argv)
    if not args.url and not args.nomad_job:
        p.error("give --url and/or --nomad-job")
    if args.concurrency < 1 or args.timeout <= 0 or args.refresh <= 0:
        p.error("--concurrency must be >= 1, --timeout and --refresh > 0")
    if any("://" in u for u in args.url):
        p.error("--url takes host:port without a scheme")
    try:
        args.phases = [Phase.parse(t) for t in args.phase or ["10s@10"]]
    except ValueError as exc:
        p.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        targets = Targets(args.url, args.timeout, args.nomad_job, args.refresh)
        try:
            results = await run(args.phases, targets, args.model, args.concurrency, args.json, stop)
        except RuntimeError as exc:
            print(f"loadgen: {exc}", file=sys.stderr)
            return 1
        finally:
            await targets.close()
        ok = sum(r.ok for r in results)
        elapsed = sum(r.elapsed_s for r in results)
        summary = {"summary": True, "ok": ok, "errors": sum(r.errors for r in results),
                   "dropped": sum(r.dropped for r in results), "elapsed_s": round(elapsed, 2),
                   "targets": targets.urls}
        if args.json:
            print(json.dumps(summary), flush=True)
        else:
            print(f"total: ok {ok} errors {summary['errors']} dropped {summary['dropped']} in {elapsed:.1f} s", flush=True)
        return 0

    return asyncio.run(go())


if __name__ == "__main__":
    sys.exit(main())
