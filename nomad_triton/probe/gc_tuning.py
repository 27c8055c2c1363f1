"""Garbage-collector settings for a process that probes thousands of endpoints for its lifetime.

Why: a prober keeps one keep-alive connection per endpoint (tens of Python objects each) alive as
long as the process runs, and every request allocates more. With CPython's default thresholds
(700, 10, 10) the collector walks those long-lived objects over and over although they never
become garbage: at 10,000 endpoints that was about a third of a probe round's CPU
(bench/p4_probe_fanout.py). Rarer young collections keep cycle collection, just later; the memory
cost is the garbage that waits for it (a few MB at most).
"""

from __future__ import annotations

import gc

# Young generation collected every 50,000 net allocations instead of 700; older generations as
# CPython does, relative to that.
FANOUT_THRESHOLDS = (50_000, 20, 100)


def tune_for_fanout() -> tuple[int, int, int]:
    """Apply FANOUT_THRESHOLDS and return the previous thresholds (to restore them in tests)."""
    previous = gc.get_threshold()
    gc.set_threshold(*FANOUT_THRESHOLDS)
    return previous  # type: ignore[return-value]
