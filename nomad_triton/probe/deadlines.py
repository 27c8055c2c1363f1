"""Deadlines for a pool of probe workers, kept with one timer instead of one per probe.

Why: `asyncio.timeout` around every probe puts a handle on the event loop's timer heap, cancels it
when the probe ends, and the loop later sweeps the cancelled handles out of the heap with
Python-level comparisons. At 10,000 probes a round that was about 20 µs a probe in
bench/p4_probe_fanout.py. A prober's probes share one timeout and start one after another, so their
deadlines arrive in start order: a FIFO of them, checked by a single timer armed for the oldest
probe still running, gives each probe the same deadline for a fraction of the cost.

A probe past its deadline is cancelled the way `asyncio.timeout` cancels: its task is cancelled,
`bounded` consumes that cancellation (`Task.uncancel`) and raises TimeoutError, while a
cancellation from outside still propagates.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class Runner:
    """One worker task and the serial number of the probe it runs now (a new one per probe)."""

    __slots__ = ("task", "serial", "expired")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.serial = 0
        self.expired = False


class DeadlineWatch:
    """Cancels a runner's probe `timeout_s` after it started; one timer for all of them."""

    def __init__(self, timeout_s: float, loop: asyncio.AbstractEventLoop) -> None:
        self._timeout_s = timeout_s
        self._loop = loop
        self._running: deque[tuple[float, Runner, int]] = deque()  # (deadline, runner, serial)
        self._timer: asyncio.TimerHandle | None = None

    def _start(self, runner: Runner) -> None:
        """The runner begins a probe now."""
        runner.serial += 1
        deadline = self._loop.time() + self._timeout_s
        self._running.append((deadline, runner, runner.serial))
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._expire)

    def _finish(self, runner: Runner) -> bool:
        """The runner's probe ended; True when its deadline had cancelled it (then `bounded`
        consumes that cancellation, whether the probe raised CancelledError or swallowed it)."""
        runner.serial += 1
        expired, runner.expired = runner.expired, False
        return expired

    async def bounded(self, runner: Runner, probe: Awaitable[T]) -> T:
        """Await `probe` (run by `runner`'s task) under the deadline; TimeoutError when it passed."""
        self._start(runner)
        try:
            result = await probe
        except asyncio.CancelledError:
            # Ours (the deadline) unless someone else cancelled the task as well.
            if not self._finish(runner) or runner.task.uncancel() > 0:
                raise
            raise TimeoutError from None
        except BaseException:
            if self._finish(runner):  # expired, but the probe failed first: consume our cancel
                runner.task.uncancel()
            raise
        if self._finish(runner):  # expired as it finished: the answer stands, our cancel goes
            runner.task.uncancel()
        return result

    def _expire(self) -> None:
        now = self._loop.time()
        running = self._running
        while running:
            deadline, runner, serial = running[0]
            if serial != runner.serial:  # that probe finished in time
                running.popleft()
                continue
            if deadline > now:
                break
            running.popleft()
            runner.expired = True
            runner.task.cancel()
        self._timer = self._loop.call_at(running[0][0], self._expire) if running else None

    def close(self) -> None:
        """Stop watching (the pool is done, or was cancelled)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._running.clear()
