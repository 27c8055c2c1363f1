"""Variable lock bookkeeping (pure, clock injected): who holds which variable and until when.

Nomad semantics followed: a lock has an ID, a TTL (renew before it runs out) and a LockDelay; when
the TTL expires the lock is dropped and nobody may acquire it again until LockDelay has passed
(an explicit release frees it at once). Only the holder's ID renews, releases or writes items.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MIN_TTL_S = 10.0
MAX_TTL_S = 24 * 3600.0


@dataclass
class HeldLock:
    id: str
    ttl_s: float
    delay_s: float
    expires_at: float


@dataclass
class LockTable:
    clock: Callable[[], float] = time.monotonic
    held: dict[Any, HeldLock] = field(default_factory=dict)
    delayed_until: dict[Any, float] = field(default_factory=dict)

    def expire(self) -> list[Any]:
        """Drop locks whose TTL passed, starting their lock delay; returns the keys dropped."""
        now = self.clock()
        gone = [k for k, lk in self.held.items() if lk.expires_at <= now]
        for key in gone:
            lock = self.held.pop(key)
            self.delayed_until[key] = now + lock.delay_s
        for key in [k for k, t in self.delayed_until.items() if t <= now]:
            del self.delayed_until[key]
        return gone

    def holder(self, key: Any) -> HeldLock | None:
        self.expire()
        return self.held.get(key)

    def acquire(self, key: Any, ttl_s: float, delay_s: float) -> HeldLock | None:
        """New lock, or None if held by someone or still in its lock delay."""
        self.expire()
        if key in self.held or key in self.delayed_until:
            return None
        lock = HeldLock(str(uuid.uuid4()), ttl_s, delay_s, self.clock() + ttl_s)
        self.held[key] = lock
        return lock

    def restore(self, key: Any, lock_id: str, ttl_s: float, delay_s: float) -> HeldLock:
        """Hold `key` for a holder known from before a restart, with a fresh TTL."""
        lock = HeldLock(lock_id, ttl_s, delay_s, self.clock() + ttl_s)
        self.held[key] = lock
        return lock

    def renew(self, key: Any, lock_id: str) -> HeldLock | None:
        lock = self.holder(key)
        if lock is None or lock.id != lock_id:
            return None
        lock.expires_at = self.clock() + lock.ttl_s
        return lock

    def release(self, key: Any, lock_id: str) -> bool:
        lock = self.holder(key)
        if lock is None or lock.id != lock_id:
            return False
        del self.held[key]
        return True

    def next_expiry(self) -> float | None:
        times = [lk.expires_at for lk in self.held.values()] + list(self.delayed_until.values())
        return min(times) if times else None
