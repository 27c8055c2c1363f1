"""Variable lock table (pure, fake clock): one holder, renew, release, TTL expiry and lock delay."""

from __future__ import annotations

from nomad_triton.devcluster.api.locks import LockTable


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_only_one_holder_until_release() -> None:
    clock = Clock()
    table = LockTable(clock=clock)
    first = table.acquire("k", ttl_s=15, delay_s=5)
    assert first is not None
    assert table.acquire("k", ttl_s=15, delay_s=5) is None
    assert not table.release("k", "someone-else")
    assert table.release("k", first.id)
    assert table.acquire("k", ttl_s=15, delay_s=5) is not None  # explicit release: no delay


def test_renew_extends_and_expiry_starts_lock_delay() -> None:
    clock = Clock()
    table = LockTable(clock=clock)
    lock = table.acquire("k", ttl_s=10, delay_s=5)
    assert lock is not None
    clock.t += 8
    assert table.renew("k", lock.id) is not None
    assert table.renew("k", "wrong") is None
    clock.t += 8  # 16 s after acquire but only 8 after the renew: still held
    assert table.holder("k") is not None
    clock.t += 3  # TTL passed -> dropped, lock delay of 5 s begins
    assert table.holder("k") is None
    assert table.acquire("k", ttl_s=10, delay_s=5) is None
    clock.t += 5.1
    assert table.acquire("k", ttl_s=10, delay_s=5) is not None


def test_expire_reports_dropped_keys_and_next_expiry() -> None:
    clock = Clock()
    table = LockTable(clock=clock)
    table.acquire("a", ttl_s=10, delay_s=0)
    table.acquire("b", ttl_s=20, delay_s=0)
    assert table.next_expiry() == clock.t + 10
    clock.t += 10
    assert table.expire() == ["a"]
    assert table.holder("b") is not None
