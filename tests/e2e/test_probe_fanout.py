"""The prober's fan-out against real loopback sockets: order, the in-flight bound, keep-alive.

Why: at 10,000 endpoints (bench P4) the prober runs a fixed pool of workers and keeps one
connection per endpoint across rounds; these are the properties that made a warm round warm.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from nomad_triton.probe.observations import Endpoint, ProbeState
from nomad_triton.probe.triton import Prober

pytestmark = pytest.mark.e2e
PAGE = (Path(__file__).parents[1] / "fixtures" / "triton_metrics.txt").read_text()


class _Counting:
    """Loopback Triton stand-in for transport properties only: counts connections and requests in
    flight (Triton itself is exercised in test_probe_triton.py)."""

    def __init__(self) -> None:
        self.connections = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.scrapes = 0
        self.heads: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                self.in_flight += 1
                self.heads.append(head.lower())
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                await asyncio.sleep(0.002)  # long enough for concurrent probes to overlap
                path = head.split(b" ", 2)[1]
                body = b""
                if path == b"/metrics":
                    self.scrapes += 1
                    body = PAGE.replace(" 20\n", f" {20 + self.scrapes}\n").encode()
                self.in_flight -= 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.mark.parametrize("sequential", [True, False])
def test_fan_out_keeps_order_bound_and_connections(sequential: bool) -> None:
    async def run() -> tuple[_Counting, list, list, int]:
        counting = _Counting()
        servers = [await asyncio.start_server(counting.handle, "127.0.0.1", 0) for _ in range(60)]
        try:
            eps = [Endpoint(f"a{i}", f"127.0.0.1:{s.sockets[0].getsockname()[1]}",
                            f"127.0.0.1:{s.sockets[0].getsockname()[1]}", ("double",))
                   for i, s in enumerate(servers)]
            async with Prober(timeout_s=5.0, sequential=sequential, per_host_connections=1 if sequential else 4,
                              max_in_flight=8) as prober:
                first = await prober.probe_all(eps)
                after_first = counting.connections
                second = await prober.probe_all(eps)
            return counting, first, second, after_first
        finally:
            for s in servers:
                s.close()

    counting, first, second, after_first = asyncio.run(run())
    assert [o.alloc_id for o in first] == [f"a{i}" for i in range(60)]  # results in input order
    assert [o.alloc_id for o in second] == [o.alloc_id for o in first]
    assert all(o.state is ProbeState.REACHABLE and o.ready and o.metrics_ok for o in first + second)
    assert all(o.has_rates() for o in second)  # the second round diffs against the first
    # At most 8 probes at once, each with at most 2 requests (readiness and scrape).
    assert 2 <= counting.most_in_flight <= (8 if sequential else 16)
    assert counting.connections == after_first  # round 2 opened no connection: keep-alive held
    if sequential:
        assert after_first == 60  # one connection per endpoint
    # Bodies are read as sent (no decompression), so no compression may be offered to the server.
    assert all(b"\r\naccept-encoding: identity\r\n" in h and b"gzip" not in h for h in counting.heads)


def test_hung_endpoints_time_out_in_the_pool_and_an_outside_cancel_still_stops_it() -> None:
    """probe_all keeps deadlines with one DeadlineWatch for the pool (not a timer per probe): a hung
    endpoint is a timeout observation at its own deadline, every other endpoint is probed, a second
    round works (no cancellation left behind), and cancelling probe_all itself still cancels it."""

    async def run() -> tuple[list, list, float, bool, list]:
        counting = _Counting()
        servers = [await asyncio.start_server(counting.handle, "127.0.0.1", 0) for _ in range(20)]
        hung = []
        for _ in range(4):  # accept connections (kernel backlog) but never answer
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(16)
            hung.append(s)
        try:
            live = [f"127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in servers]
            dead = [f"127.0.0.1:{s.getsockname()[1]}" for s in hung]
            addrs = live[:10] + dead + live[10:]
            eps = [Endpoint(f"a{i}", a, a, ("double",)) for i, a in enumerate(addrs)]
            async with Prober(timeout_s=0.4, max_in_flight=3) as prober:
                t0 = time.monotonic()
                first = await prober.probe_all(eps)
                elapsed = time.monotonic() - t0
                second = await prober.probe_all(eps)
                try:
                    await asyncio.wait_for(prober.probe_all(eps), timeout=0.1)
                    cancelled = False
                except TimeoutError:
                    cancelled = True
                third = await prober.probe_all(eps[:10])  # still usable after that cancel
            return first, second, elapsed, cancelled, third
        finally:
            for s in servers:
                s.close()
            for h in hung:
                h.close()

    first, second, elapsed, cancelled, third = asyncio.run(run())
    for round_ in (first, second):
        assert [o.alloc_id for o in round_] == [f"a{i}" for i in range(24)]
        timed_out = [o.alloc_id for o in round_ if o.state is ProbeState.UNREACHABLE]
        assert timed_out == ["a10", "a11", "a12", "a13"]
        assert all(o.error == "timeout" and o.probe_ms is not None and 380 <= o.probe_ms < 1500
                   for o in round_ if o.state is ProbeState.UNREACHABLE)
        assert all(o.ready and o.metrics_ok for o in round_ if o.state is ProbeState.REACHABLE)
    # 3 workers, 4 hung endpoints: two deadlines' worth at most, plus the quick ones.
    assert 0.75 <= elapsed < 2.5
    assert cancelled
    assert len(third) == 10 and all(o.state is ProbeState.REACHABLE for o in third)


def test_a_prober_reused_in_another_event_loop_probes_there() -> None:
    """A transport's sockets belong to one loop: a prober whose first loop ended without aclose
    (two `asyncio.run` calls) must make a new transport in the second, not wait on the first's."""
    prober = Prober(timeout_s=2.0)

    async def one_round() -> list:
        counting = _Counting()
        server = await asyncio.start_server(counting.handle, "127.0.0.1", 0)
        try:
            addr = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
            return await prober.probe_all([Endpoint("a0", addr, addr, ("double",))])
        finally:
            server.close()

    first = asyncio.run(one_round())
    second = asyncio.run(one_round())
    asyncio.run(prober.aclose())
    assert [o.state for o in first + second] == [ProbeState.REACHABLE, ProbeState.REACHABLE]
    assert all(o.ready and o.metrics_ok for o in first + second)
