"""Concurrent Triton probes: health, per-model readiness and Prometheus metrics, with deadlines.

One probe per allocation, up to `max_in_flight` at once from a fixed pool of workers in one event
loop, with connections kept alive between rounds. Each probe is bounded by its own deadline (one
DeadlineWatch keeps a pool's deadlines, probe/deadlines.py), so a dead or hung endpoint becomes a
typed UNREACHABLE observation within `timeout_s` and never stalls the others. Requests within a
probe also run concurrently.
Triton answers health with 200 (true) or 400 (false). Steady state costs two requests per
allocation (/v2/health/ready and /metrics): ready implies live, and under strict readiness it
implies every model listed on the metrics page is ready; `/v2/health/live` and
`/v2/models/<m>/ready` are asked only when that leaves doubt. At 1,000 allocations per second the
saved requests are a third of a core.

Transport: libcurl's multi interface through pycurl (probe/curl_transport.py), driven by this
loop. At 10,000 allocations the HTTP client is most of a round: aiohttp's per-request cost
(~0.17 ms) alone kept a round at 4.4-5.9 s on one core, the same requests through libcurl cost
about half, and a whole round is now well under the 5 s target (bench/p4_probe_fanout.py,
docs/benchmarks.md). httpx was measured before both and rejected: its pool scans every pooled
connection per request. The Nomad API side stays on python-nomad.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from nomad_triton.probe.curl_transport import CurlTransport
from nomad_triton.probe.deadlines import DeadlineWatch, Runner
from nomad_triton.probe.metrics import MetricsSample, RateTracker, parse_metrics
from nomad_triton.probe.observations import Endpoint, ModelRates, Observation, ProbeState

# What a probe turns into an UNREACHABLE observation: TransportError and TimeoutError are OSErrors.
NETWORK_ERRORS = (OSError,)


class HttpTransport(Protocol):
    """What the prober needs from an HTTP client: GETs in the running loop, with keep-alive."""

    loop: asyncio.AbstractEventLoop

    async def get(self, url: str) -> tuple[int, bytes]: ...  # (status, body); raises NETWORK_ERRORS

    async def aclose(self) -> None: ...


def _url(addr: str, path: str) -> str:
    base = addr if addr.startswith(("http://", "https://")) else f"http://{addr}"
    return base.rstrip("/") + path


class Prober:
    """Probes Triton endpoints and turns metrics into rates (keeps a RateTracker between rounds).

    Use as `async with Prober(...) as p:`; the transport is created inside the running loop and
    keeps connections alive between rounds. TLS (https:// addresses) is verified, against
    `ca_file` or else the CA bundle Python's ssl module trusts.
    """

    def __init__(
        self,
        timeout_s: float = 1.0,
        tracker: RateTracker | None = None,
        clock: Callable[[], float] = time.time,
        ca_file: str | None = None,
        per_host_connections: int = 4,
        strict_readiness: bool = True,
        sequential: bool = False,
        max_in_flight: int = 1000,
        keepalive_s: float = 75.0,
        transport_factory: Callable[[], HttpTransport] | None = None,
    ) -> None:
        self.strict_readiness = strict_readiness
        self.sequential = sequential
        # Probes in flight at once, across every probe_all of this prober. With thousands started
        # together the loop interleaves them all, so none finishes before its deadline; bounded,
        # they complete in waves and each deadline measures its own endpoint, not the crowd.
        self.max_in_flight = max_in_flight
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self.timeout_s = timeout_s
        self.tracker = tracker or RateTracker()
        self._clock = clock
        self._ca_file = ca_file
        self._per_host = per_host_connections
        # Idle connections are kept longer than an evaluation interval: a round of thousands of
        # endpoints, or a 30 s interval, would otherwise reconnect to every endpoint every round.
        self._keepalive_s = keepalive_s
        self._transport_factory = transport_factory  # another client, e.g. a benchmark's baseline
        self._transport: HttpTransport | None = None
        self._urls: dict[tuple[str, str], str] = {}

    async def __aenter__(self) -> Prober:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None

    def _http(self) -> HttpTransport:
        """The transport, made in the running loop. A transport's sockets and timers belong to one
        loop: one left on another loop (a prober reused after its asyncio.run ended without
        aclose) is replaced, not used."""
        transport = self._transport
        if transport is None or transport.loop is not asyncio.get_running_loop():
            transport = self._transport = (self._transport_factory or self._curl_transport)()
        return transport

    def _curl_transport(self) -> CurlTransport:
        return CurlTransport(
            per_host=self._per_host, keepalive_s=self._keepalive_s,
            # A backstop only: every probe already runs under its own deadline and is cancelled
            # at it, which takes its requests off their connections.
            request_timeout_s=max(self.timeout_s * 2, 5.0), ca_file=self._ca_file)

    def _url(self, addr: str, path: str) -> str:
        """The URL of one endpoint's route, built once per endpoint and route."""
        url = self._urls.get((addr, path))
        if url is None:
            if len(self._urls) >= 100_000:  # endpoints come and go; never grow without bound
                self._urls.clear()
            url = self._urls[(addr, path)] = _url(addr, path)
        return url

    async def _status(self, url: str) -> int:
        return (await self._http().get(url))[0]

    async def _scrape(self, ep: Endpoint) -> MetricsSample | BaseException:
        """The metrics page, or the error that kept it from us (the probe still reports readiness)."""
        try:
            status, body = await self._http().get(self._url(ep.metrics, "/metrics"))  # type: ignore[arg-type]
            if status != 200:
                raise ValueError(f"HTTP {status}")
            # The text exposition format is UTF-8 by definition; no charset sniffing per page.
            return parse_metrics(body.decode("utf-8", errors="replace"))
        except Exception as exc:  # noqa: BLE001 - any scrape failure is this probe's metrics error
            return exc

    async def _probe(self, ep: Endpoint) -> Observation:
        ts = self._clock()
        sample: MetricsSample | BaseException | None = None
        if self.sequential:
            # One connection per allocation: the scrape follows readiness on the same keep-alive
            # connection instead of opening a second one (halves the open files at 10,000
            # allocations). No extra tasks either.
            ready_code = await self._status(self._url(ep.http, "/v2/health/ready"))
            if ep.metrics:
                sample = await self._scrape(ep)
        else:
            ready_t = asyncio.ensure_future(self._status(self._url(ep.http, "/v2/health/ready")))
            metrics_t = asyncio.ensure_future(self._scrape(ep)) if ep.metrics else None
            try:
                ready_code = await ready_t
                if metrics_t is not None:
                    sample = await metrics_t
            finally:
                if metrics_t is not None and not metrics_t.done():
                    metrics_t.cancel()
        # Under strict readiness (Triton's default, always on in PyTriton) a ready server means
        # every loaded model is ready, and the metrics page lists the loaded models; only the
        # models that leaves in doubt are asked individually (saves a request per allocation).
        if ready_code == 200 and self.strict_readiness and isinstance(sample, MetricsSample):
            counters = sample.counters
            if all(m in counters for m in ep.models):  # the steady state: nothing left in doubt
                models = self.tracker.update(ep.alloc_id, ts, sample, dict.fromkeys(ep.models, True))
                return Observation(
                    ts=ts, alloc_id=ep.alloc_id, address=ep.http, state=ProbeState.REACHABLE, live=True,
                    ready=True, models=models, metrics_ok=True, gpu_utilization=sample.gpu_utilization,
                    gpu_memory_used_bytes=sample.gpu_memory_used_bytes,
                    gpu_memory_total_bytes=sample.gpu_memory_total_bytes,
                    probe_ms=(self._clock() - ts) * 1000.0,
                )
        listed = set(sample.counters) if isinstance(sample, MetricsSample) else set()
        inferred = self.strict_readiness and ready_code == 200
        ask = [m for m in ep.models if not (inferred and m in listed)]
        live: bool | None = True
        checks = [self._status(self._url(ep.http, f"/v2/models/{m}/ready")) for m in ask]
        if ready_code != 200:
            checks.append(self._status(self._url(ep.http, "/v2/health/live")))
        codes = await asyncio.gather(*checks, return_exceptions=True) if checks else []
        if ready_code != 200:
            live = codes[-1] == 200
        model_ready: dict[str, int | BaseException] = {m: 200 for m in ep.models if m not in ask}
        model_ready.update(zip(ask, codes[: len(ask)], strict=True))
        error: str | None = None
        if isinstance(sample, BaseException):
            error, sample = f"metrics: {type(sample).__name__}: {sample}", None
        models: dict[str, ModelRates] = {}
        if sample is not None:
            models = self.tracker.update(
                ep.alloc_id, ts, sample, {m: _ok(code) for m, code in model_ready.items()})
        for m, code in model_ready.items():
            models.setdefault(m, ModelRates(ready=_ok(code)))
        return Observation(
            ts=ts,
            alloc_id=ep.alloc_id,
            address=ep.http,
            state=ProbeState.REACHABLE,
            live=live,
            ready=ready_code == 200,
            models=models,
            metrics_ok=sample is not None,
            gpu_utilization=sample.gpu_utilization if sample else None,
            gpu_memory_used_bytes=sample.gpu_memory_used_bytes if sample else None,
            gpu_memory_total_bytes=sample.gpu_memory_total_bytes if sample else None,
            error=error,
            probe_ms=(self._clock() - ts) * 1000.0,
        )

    def _failed(self, ep: Endpoint, ts: float, started: float, exc: BaseException) -> Observation:
        """The UNREACHABLE observation of a probe that failed or ran out of time."""
        # A failed probe says nothing about load; forget the counters so a restarted server is
        # diffed from scratch rather than against its pre-crash totals.
        self.tracker.forget(ep.alloc_id)
        reason = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        detail = str(exc)
        return Observation(
            ts=ts,
            alloc_id=ep.alloc_id,
            address=ep.http,
            state=ProbeState.UNREACHABLE,
            error=f"{reason}: {detail}" if detail else reason,
            probe_ms=(time.monotonic() - started) * 1000.0,
        )

    async def probe(self, ep: Endpoint) -> Observation:
        """Probe one allocation; never raises for network trouble, returns UNREACHABLE instead."""
        started, ts = time.monotonic(), self._clock()
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._probe(ep)
        except NETWORK_ERRORS as exc:
            return self._failed(ep, ts, started, exc)

    def forget(self, alloc_ids: Iterable[str]) -> None:
        """Drop the counters of allocations that are gone."""
        for a in alloc_ids:
            self.tracker.forget(a)

    async def probe_all(self, endpoints: Iterable[Endpoint]) -> list[Observation]:
        """Every endpoint probed once, in the order given; at most `max_in_flight` at a time.

        A fixed set of workers takes the endpoints one after another rather than one task per
        endpoint queued on the semaphore: 10,000 waiters on one asyncio.Semaphore cost a scan of
        the waiter queue per release (quadratic), and 10,000 tasks are 10,000 more objects for
        the garbage collector to walk. The semaphore still bounds what several concurrent
        probe_all calls (an agent's targets) have in flight together. Deadlines are the same as
        `probe`'s, kept by one DeadlineWatch for the whole pool instead of a timer per probe.
        """
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:  # a semaphore belongs to one loop
            self._slots = (loop, asyncio.Semaphore(self.max_in_flight))
        slots = self._slots[1]
        todo = list(endpoints)
        results: list[Observation | None] = [None] * len(todo)
        queue = iter(enumerate(todo))
        watch = DeadlineWatch(self.timeout_s, loop)

        async def worker() -> None:
            runner = Runner(asyncio.current_task())  # type: ignore[arg-type]
            for i, ep in queue:
                async with slots:
                    started, ts = time.monotonic(), self._clock()
                    try:
                        results[i] = await watch.bounded(runner, self._probe(ep))
                    except NETWORK_ERRORS as exc:
                        results[i] = self._failed(ep, ts, started, exc)

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.max_in_flight, len(todo)))))
        finally:
            watch.close()
        return [r for r in results if r is not None]


def _ok(code: int | BaseException | None) -> bool | None:
    if code is None:
        return None
    return code == 200
