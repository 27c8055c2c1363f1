"""DeadlineWatch: one timer keeps every worker's probe deadline, as asyncio.timeout would per probe.

Pure event-loop logic (no sockets): probes are coroutines that sleep or hang.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from nomad_triton.probe.deadlines import DeadlineWatch, Runner


async def _timed(watch: DeadlineWatch, runner: Runner, work: asyncio.Future[None] | float) -> str:
    """One probe the way Prober.probe_all's workers run it: 'ok', 'timeout', or it raises."""
    probe = asyncio.sleep(work) if isinstance(work, float) else work
    try:
        await watch.bounded(runner, probe)
    except TimeoutError:
        return "timeout"
    return "ok"


def test_a_hung_probe_times_out_at_its_deadline_and_the_worker_goes_on() -> None:
    async def run() -> tuple[list[str], float, int]:
        loop = asyncio.get_running_loop()
        watch = DeadlineWatch(0.2, loop)
        runner = Runner(asyncio.current_task())  # type: ignore[arg-type]
        t0 = time.monotonic()
        first = await _timed(watch, runner, loop.create_future())  # never completes
        elapsed = time.monotonic() - t0
        second = await _timed(watch, runner, 0.01)
        watch.close()
        return [first, second], elapsed, runner.task.cancelling()

    outcomes, elapsed, cancelling = asyncio.run(run())
    assert outcomes == ["timeout", "ok"]
    assert 0.19 <= elapsed < 0.5
    assert cancelling == 0  # the deadline's cancellation was consumed, none left pending


def test_a_finished_probes_deadline_never_cancels_the_next_probe() -> None:
    """Probe 1 ends early; probe 2 runs past probe 1's deadline but within its own."""

    async def run() -> list[str]:
        watch = DeadlineWatch(0.3, asyncio.get_running_loop())
        runner = Runner(asyncio.current_task())  # type: ignore[arg-type]
        out = [await _timed(watch, runner, 0.05), await _timed(watch, runner, 0.2)]
        watch.close()
        return out

    assert asyncio.run(run()) == ["ok", "ok"]


def test_many_workers_only_the_hung_ones_time_out() -> None:
    async def run() -> list[str]:
        loop = asyncio.get_running_loop()
        watch = DeadlineWatch(0.15, loop)

        async def worker(i: int) -> list[str]:
            runner = Runner(asyncio.current_task())  # type: ignore[arg-type]
            return [await _timed(watch, runner, loop.create_future() if (i + j) % 5 == 0 else 0.001 * i)
                    for j in range(3)]  # a future of its own: cancelling one must not end the others

        results = await asyncio.gather(*(worker(i) for i in range(20)))
        watch.close()
        return [r for rs in results for r in rs]

    outcomes = asyncio.run(run())
    assert outcomes.count("timeout") == 12 and outcomes.count("ok") == 48  # (i + j) % 5 == 0: 12 of 60


@pytest.mark.parametrize("with_deadline", [False, True], ids=["alone", "racing-the-deadline"])
def test_a_cancellation_from_outside_still_propagates(with_deadline: bool) -> None:
    """Cancelling the pool cancels a hanging probe's worker, also when its deadline fires in the
    same step (the worker must not swallow the outside cancel as a timeout)."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        watch = DeadlineWatch(0.05 if with_deadline else 10.0, loop)

        async def worker() -> str:
            return await _timed(watch, Runner(asyncio.current_task()), loop.create_future())  # type: ignore[arg-type]

        task = asyncio.ensure_future(worker())
        await asyncio.sleep(0.01)  # the worker's probe is now hanging
        if with_deadline:
            time.sleep(0.06)  # past its deadline, with the loop held so no timer runs yet
            watch._expire()  # the deadline cancels it (what its timer does), and in the same step
        task.cancel()  # someone cancels the pool
        try:
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            watch.close()

    asyncio.run(run())


def test_a_worker_waiting_between_probes_is_never_cancelled() -> None:
    """After a probe ends, its deadline passing must not hit the worker (e.g. queued for a slot)."""

    async def run() -> str:
        watch = DeadlineWatch(0.1, asyncio.get_running_loop())
        runner = Runner(asyncio.current_task())  # type: ignore[arg-type]
        outcome = await _timed(watch, runner, 0.01)
        await asyncio.sleep(0.2)  # past that probe's deadline, outside any probe
        watch.close()
        return outcome

    assert asyncio.run(run()) == "ok"
