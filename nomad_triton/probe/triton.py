"""Concurrent Triton probes: health, per-model readiness and Prometheus metrics, with deadlines.

One probe per allocation, all allocations concurrently in one event loop. Each probe is bounded by
its own deadline, so a dead or hung endpoint becomes a typed UNREACHABLE observation within
`timeout_s` and never stalls the others. Requests within a probe also run concurrently.
Triton answers health with 200 (true) or 400 (false); `/v2/health/live` is only asked when
`/v2/health/ready` is not 200, because ready implies live and the saved request matters at 1,000
allocations per second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import httpx

from nomad_triton.probe.metrics import MetricsSample, RateTracker, parse_metrics
from nomad_triton.probe.observations import Endpoint, ModelRates, Observation, ProbeState


def _url(addr: str, path: str) -> str:
    base = addr if addr.startswith(("http://", "https://")) else f"http://{addr}"
    return base.rstrip("/") + path


class Prober:
    """Probes Triton endpoints and turns metrics into rates (keeps a RateTracker between rounds)."""

    def __init__(
        self,
        timeout_s: float = 1.0,
        client: httpx.AsyncClient | None = None,
        tracker: RateTracker | None = None,
        clock: Callable[[], float] = time.time,
        max_connections: int = 2048,
    ) -> None:
        self.timeout_s = timeout_s
        self.tracker = tracker or RateTracker()
        self._clock = clock
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            verify=True,
            trust_env=False,
        )

    async def __aenter__(self) -> Prober:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def _status(self, url: str) -> int:
        return (await self._client.get(url)).status_code

    async def _metrics(self, url: str) -> MetricsSample:
        r = await self._client.get(url)
        r.raise_for_status()
        return parse_metrics(r.text)

    async def _probe(self, ep: Endpoint) -> Observation:
        ts = self._clock()
        ready_t = asyncio.ensure_future(self._status(_url(ep.http, "/v2/health/ready")))
        model_t = {m: asyncio.ensure_future(self._status(_url(ep.http, f"/v2/models/{m}/ready"))) for m in ep.models}
        metrics_t = asyncio.ensure_future(self._metrics(_url(ep.metrics, "/metrics"))) if ep.metrics else None
        try:
            ready_code = await ready_t
        except httpx.HTTPError:
            for t in [*model_t.values(), *([metrics_t] if metrics_t else [])]:
                t.cancel()
            raise
        live: bool | None = True
        if ready_code != 200:
            live = (await self._status(_url(ep.http, "/v2/health/live"))) == 200
        model_ready: dict[str, bool] = {}
        for m, t in model_t.items():
            try:
                model_ready[m] = (await t) == 200
            except httpx.HTTPError:
                model_ready[m] = False
        sample: MetricsSample | None = None
        error: str | None = None
        if metrics_t is not None:
            try:
                sample = await metrics_t
            except (httpx.HTTPError, ValueError) as exc:
                error = f"metrics: {type(exc).__name__}: {exc}"
        models: dict[str, ModelRates] = {}
        gpu = (None, None, None)
        if sample is not None:
            rates = self.tracker.update(ep.alloc_id, ts, sample)
            models = {m: _with_ready(r, model_ready.get(m)) for m, r in rates.items()}
            gpu = (sample.gpu_utilization, sample.gpu_memory_used_bytes, sample.gpu_memory_total_bytes)
        for m, ok in model_ready.items():
            models.setdefault(m, ModelRates(ready=ok))
        return Observation(
            ts=ts,
            alloc_id=ep.alloc_id,
            address=ep.http,
            state=ProbeState.REACHABLE,
            live=live,
            ready=ready_code == 200,
            models=models,
            metrics_ok=sample is not None,
            gpu_utilization=gpu[0],
            gpu_memory_used_bytes=gpu[1],
            gpu_memory_total_bytes=gpu[2],
            error=error,
            probe_ms=(self._clock() - ts) * 1000.0,
        )

    async def probe(self, ep: Endpoint) -> Observation:
        """Probe one allocation; never raises for network trouble, returns UNREACHABLE instead."""
        start = time.monotonic()
        ts = self._clock()
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._probe(ep)
        except (TimeoutError, httpx.HTTPError, OSError) as exc:
            # A probe that failed says nothing about load; forget its counters so a restarted
            # server is diffed from scratch rather than against pre-crash totals.
            self.tracker.forget(ep.alloc_id)
            reason = "timeout" if isinstance(exc, TimeoutError | httpx.TimeoutException) else type(exc).__name__
            return Observation(
                ts=ts,
                alloc_id=ep.alloc_id,
                address=ep.http,
                state=ProbeState.UNREACHABLE,
                error=f"{reason}: {exc}".rstrip(": "),
                probe_ms=(time.monotonic() - start) * 1000.0,
            )

    async def probe_all(self, endpoints: Iterable[Endpoint]) -> list[Observation]:
        return list(await asyncio.gather(*(self.probe(ep) for ep in endpoints)))


def _with_ready(r: ModelRates, ready: bool | None) -> ModelRates:
    if ready is None:
        return r
    return replace(r, ready=ready)
