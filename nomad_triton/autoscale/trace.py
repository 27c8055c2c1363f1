"""Traces for offline replay: synthetic load traces (JSON) and recorded observations (JSON lines).

A load trace describes arrivals and replica behaviour so the simulator can run a queueing model;
an observation trace is what `nomad-triton probe JOB --record FILE` wrote from a live run, so a
policy change can be replayed against real measurements before it touches a cluster.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from nomad_triton.probe.observations import Observation


class TraceError(ValueError):
    """A trace file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class LoadTrace:
    name: str
    duration_s: float
    arrivals: list[tuple[float, float]]  # (t seconds, requests/s), piecewise linear
    service_rate: float  # requests/s one replica completes when busy
    startup_s: float  # time from placement to ready
    initial_replicas: int
    min_count: int = 1
    max_count: int = 20
    slo_ms: float = 100.0
    tick_s: float = 1.0
    seed: int = 0
    noise: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def rate_at(self, t: float) -> float:
        """Arrival rate at time t (linear between points, flat outside)."""
        ts = [p[0] for p in self.arrivals]
        i = bisect.bisect_right(ts, t)
        if i == 0:
            return self.arrivals[0][1]
        if i >= len(self.arrivals):
            return self.arrivals[-1][1]
        (t0, r0), (t1, r1) = self.arrivals[i - 1], self.arrivals[i]
        return r0 if t1 == t0 else r0 + (r1 - r0) * (t - t0) / (t1 - t0)


_REQUIRED = ("name", "duration_s", "arrivals", "service_rate", "startup_s", "initial_replicas")


def load_trace(path: str | Path) -> LoadTrace:
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise TraceError(f"{p}: cannot read trace: {exc}") from None
    if not isinstance(raw, dict):
        raise TraceError(f"{p}: trace must be a JSON object")
    for key in _REQUIRED:
        if key not in raw:
            raise TraceError(f"{p}: field '{key}' is required")
    try:
        arrivals = sorted((float(t), float(r)) for t, r in raw["arrivals"])
    except (TypeError, ValueError):
        raise TraceError(f"{p}: field 'arrivals' must be a list of [t, rate] pairs") from None
    if not arrivals or any(r < 0 for _, r in arrivals):
        raise TraceError(f"{p}: field 'arrivals' must be non-empty with rates >= 0")
    known = {f for f in LoadTrace.__dataclass_fields__} - {"arrivals", "extra"}
    kwargs = {k: v for k, v in raw.items() if k in known}
    extra = {k: v for k, v in raw.items() if k not in known and k != "arrivals"}
    try:
        trace = LoadTrace(arrivals=arrivals, extra=extra, **kwargs)
    except TypeError as exc:
        raise TraceError(f"{p}: {exc}") from None
    for key in ("duration_s", "service_rate", "tick_s"):
        try:
            positive = float(getattr(trace, key)) > 0
        except (TypeError, ValueError):
            positive = False
        if not positive:
            raise TraceError(f"{p}: field '{key}' must be a number > 0")
    return trace


def append_observations(fh: IO[str], observations: list[Observation]) -> None:
    """Append observations as JSON lines (one per allocation per round) and flush."""
    for o in observations:
        fh.write(o.to_json() + "\n")
    fh.flush()


def read_observations(path: str | Path) -> list[Observation]:
    p = Path(path)
    out: list[Observation] = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{p}: cannot read trace: {exc}") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(Observation.from_json(line))
        except (ValueError, TypeError, KeyError) as exc:
            raise TraceError(f"{p}: line {i}: not an observation: {exc}") from None
    return out


def is_observation_trace(path: str | Path) -> bool:
    return Path(path).suffix == ".jsonl"
