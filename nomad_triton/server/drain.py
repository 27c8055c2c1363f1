"""Graceful drain: readiness false first, in-flight work finishes, then tritonserver stops.

Measured with tritonserver 2.51: on SIGINT it closes its listeners at once (health probes get a
connection reset) and only then waits for in-flight inferences. To give load balancers and Nomad
checks a clean "not ready" (HTTP 400) while requests still complete, we first unload every model
through the repository API (token-protected): strict readiness turns false immediately, endpoints
stay up, new requests are refused, and requests already accepted run to completion.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import tritonclient.http as triton_http

LOG = logging.getLogger("nomad_triton.server")
ACCESS_HEADER = "triton-access-token"


class InFlight:
    """Counts batches executing in our callables (Triton's queue feeds them within max_queue_delay)."""

    def __init__(self) -> None:
        self._count = 0
        self._cond = threading.Condition()

    def __enter__(self) -> InFlight:
        with self._cond:
            self._count += 1
        return self

    def __exit__(self, *_: object) -> None:
        with self._cond:
            self._count -= 1
            self._cond.notify_all()

    @property
    def count(self) -> int:
        with self._cond:
            return self._count

    def wait_idle(self, deadline: float) -> bool:
        """True once nothing executes; False if the monotonic deadline passes first."""
        with self._cond:
            while self._count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(timeout=min(left, 0.1))
            return True


def mark_unready(http_url: str, token: str, models: Iterable[str]) -> None:
    """Ask Triton to unload every model: readiness 400 now, accepted requests still complete."""
    client = triton_http.InferenceServerClient(http_url, connection_timeout=5.0, network_timeout=5.0)
    try:
        for name in models:
            try:
                client.unload_model(name, headers={ACCESS_HEADER: token})
            except Exception as exc:  # keep draining the others; tritonserver's own stop still waits
                LOG.warning("unload of %s failed during drain: %s", name, exc)
    finally:
        client.close()


def drain(http_url: str, token: str, models: list[str], inflight: InFlight, drain_timeout_s: float,
          settle_s: float) -> bool:
    """Readiness off, then wait (bounded) for executing batches; returns False if the deadline hit."""
    deadline = time.monotonic() + drain_timeout_s
    mark_unready(http_url, token, models)
    time.sleep(min(settle_s, max(0.0, deadline - time.monotonic())))  # let queued requests reach us
    return inflight.wait_idle(deadline)
