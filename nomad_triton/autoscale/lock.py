"""Leader election for running several autoscaler replicas: a Nomad variable lock.

Only the holder of `nomad-triton/autoscaler/<job>/<group>` acts; standbys keep trying. Uses
Nomad's own variable locks (1.7+: `PUT /v1/var/:path?lock-acquire|lock-renew|lock-release`,
409 while held) through the project's Nomad facade, so HA needs no Consul and no extra service.
The holder renews at a third of the TTL; a renew that fails means leadership is lost at once
(better to pause a step than to have two controllers scaling the same group).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from nomad_triton.nomad.errors import NomadError

MIN_TTL_S = 10.0  # Nomad rejects shorter lock TTLs


class LockClient(Protocol):
    def var_lock_acquire(self, path: str, ttl_s: float, lock_delay_s: float = 0.0) -> dict[str, Any]: ...

    def var_lock_renew(self, path: str, lock_id: str) -> dict[str, Any]: ...

    def var_lock_release(self, path: str, lock_id: str) -> dict[str, Any]: ...


def lock_path(job: str, group: str) -> str:
    return f"nomad-triton/autoscaler/{job}/{group}"


class LeaderLock:
    def __init__(self, client: LockClient, path: str, ttl_s: float = 15.0, lock_delay_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s < MIN_TTL_S:
            raise ValueError(f"lock TTL must be >= {MIN_TTL_S:.0f}s (Nomad's minimum)")
        self.client = client
        self.path = path
        self.ttl_s = ttl_s
        self.lock_delay_s = lock_delay_s
        self.lock_id: str | None = None
        self._renewed_at = 0.0
        self._clock = clock

    @property
    def held(self) -> bool:
        return self.lock_id is not None

    def valid(self) -> bool:
        """Held and renewed within one TTL: a process that was paused past its TTL may have lost
        the lock to a standby without knowing it yet, and must not act on it."""
        return self.lock_id is not None and self._clock() - self._renewed_at < self.ttl_s

    def ensure(self) -> bool:
        """True when this process holds the lock (acquiring or renewing as needed). Never raises
        for Nomad trouble: being unsure means not leading."""
        now = self._clock()
        if self.lock_id is not None:
            if now - self._renewed_at < self.ttl_s / 3:
                return True
            try:
                self.client.var_lock_renew(self.path, self.lock_id)
                self._renewed_at = now
                return True
            except NomadError:
                self.lock_id = None
                return False
        try:
            reply = self.client.var_lock_acquire(self.path, self.ttl_s, self.lock_delay_s)
        except NomadError:  # Conflict (held elsewhere) or Nomad unreachable
            return False
        lock_id = ((reply or {}).get("Lock") or {}).get("ID")
        if not lock_id:
            return False
        self.lock_id, self._renewed_at = lock_id, now
        return True

    def release(self) -> None:
        if self.lock_id is None:
            return
        lock_id, self.lock_id = self.lock_id, None
        try:
            self.client.var_lock_release(self.path, lock_id)
        except NomadError:
            pass  # the TTL frees it anyway
