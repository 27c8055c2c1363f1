"""Garbage-collector settings for a process that probes thousands of endpoints for its lifetime.

Why: a prober keeps state per endpoint alive as long as the process runs (rate counters, cached
URLs, the last observations), and every request allocates more. With CPython's default thresholds
(700, 10, 10) the collector walks those long-lived objects over and over although they never
become garbage. Over aiohttp, whose kept connections were tens of Python objects each, that was a
third of a 10,000-endpoint round's CPU; over libcurl the connections live in C and the saving is
small (2.32-2.38 s against 2.45-2.48 s a round, alternating in one process; within noise in a
third pair). It stays because it costs nothing. Rarer young collections keep cycle collection, just later; the memory
cost is the cyclic garbage that waits for it (at most the young generation's 200,000 objects; a steady
probe round makes none).
"""

from __future__ import annotations

import gc

# Young generation collected every 200,000 net allocations instead of 700; older generations as
# CPython does, relative to that. Sized from the probe round, which frees about as much as it
# allocates: each request's parser, reader and key replace the last request's on its kept
# connection, each observation replaces the last round's. At 10,000 endpoints the net count rises
# by ~36,000 within a round and falls back (measured with gc.get_count()), so a steady round
# triggers no collection up to ~50,000 endpoints. At 50,000 two young collections a round walked
# 100,000-270,000 live objects and freed none: ~0.25 s, 5-6 % of a round (bench/p4_probe_fanout.py,
# timed with gc.callbacks).
FANOUT_THRESHOLDS = (200_000, 20, 100)


def tune_for_fanout() -> tuple[int, int, int]:
    """Apply FANOUT_THRESHOLDS and return the previous thresholds (to restore them in tests)."""
    previous = gc.get_threshold()
    gc.set_threshold(*FANOUT_THRESHOLDS)
    return previous  # type: ignore[return-value]
