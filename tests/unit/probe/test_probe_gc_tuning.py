"""tune_for_fanout: the agent's collector thresholds, applied and reversible."""

from __future__ import annotations

import gc

from nomad_triton.probe.gc_tuning import FANOUT_THRESHOLDS, tune_for_fanout


def test_thresholds_are_applied_and_the_previous_ones_returned() -> None:
    before = gc.get_threshold()
    previous = tune_for_fanout()
    try:
        assert previous == before
        assert gc.get_threshold() == FANOUT_THRESHOLDS
        assert gc.isenabled()  # rarer collections, never none: cyclic garbage is still collected
    finally:
        gc.set_threshold(*previous)
