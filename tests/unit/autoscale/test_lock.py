"""LeaderLock's bookkeeping (renew cadence, losing leadership); Nomad itself is covered in e2e."""

from __future__ import annotations

from typing import Any

import pytest

from nomad_triton.autoscale.lock import LeaderLock
from nomad_triton.nomad.errors import Conflict, Unreachable


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail_next: Exception | None = None

    def _maybe_fail(self) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    def var_lock_acquire(self, path: str, ttl_s: float, lock_delay_s: float = 0.0) -> dict[str, Any]:
        self.calls.append("acquire")
        self._maybe_fail()
        return {"Path": path, "Lock": {"ID": "lock-1", "TTL": "15s"}}

    def var_lock_renew(self, path: str, lock_id: str) -> dict[str, Any]:
        self.calls.append("renew")
        self._maybe_fail()
        return {}

    def var_lock_release(self, path: str, lock_id: str) -> dict[str, Any]:
        self.calls.append("release")
        return {}


def test_acquire_renew_at_a_third_of_ttl_and_lose_on_failed_renew() -> None:
    now = [0.0]
    c = Recorder()
    lock = LeaderLock(c, "p", ttl_s=15, clock=lambda: now[0])
    assert lock.ensure() and lock.lock_id == "lock-1"
    now[0] = 4.0
    assert lock.ensure() and c.calls == ["acquire"]  # fresh enough, no request
    now[0] = 5.5
    assert lock.ensure() and c.calls == ["acquire", "renew"]
    now[0] = 11.0
    c.fail_next = Unreachable("nomad down")
    assert lock.ensure() is False and not lock.held  # unsure -> not leading
    c.fail_next = Conflict("held by another")
    assert lock.ensure() is False
    assert lock.ensure() is True
    lock.release()
    assert c.calls[-1] == "release" and not lock.held
    lock.release()  # idempotent
    assert c.calls.count("release") == 1


def test_ttl_below_nomad_minimum_is_rejected() -> None:
    with pytest.raises(ValueError, match=">= 10s"):
        LeaderLock(Recorder(), "p", ttl_s=5)
