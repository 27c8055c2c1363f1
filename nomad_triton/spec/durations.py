"""Go-style duration strings ("500ms", "10s", "5m", "1h30m") as `timedelta`.

Why: Nomad's jobspec takes Go durations, and a spec written for Nomad should read the same.
Holding them as `timedelta` lets the autoscaler and cross-field checks compare them, while the
renderer writes them back in Go form with `format_duration`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

from nomad_triton.spec.limits import MAX_DURATION, MAX_DURATION_TEXT

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_MAX_NS = 2**63 - 1  # Go's time.Duration is an int64 of nanoseconds
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: Any) -> timedelta:
    """Parse a Go duration string; bare numbers are rejected because their unit would be a guess.

    Surrounding whitespace is an error, not trimmed: Go's ParseDuration (and so Nomad) refuses
    `" 5s"`, and a spec that validates here must not fail there.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f'expected a duration string such as "10s" or "5m", got {value!r}')
    text = value
    if text == "":
        raise ValueError('empty duration (use e.g. "10s"; "0" for none)')
    if text != text.strip():
        raise ValueError(f"duration {value!r} has surrounding whitespace")
    if text == "0":
        return timedelta(0)
    pos, total_ns = 0, 0.0
    while pos < len(text):
        match = _PART.match(text, pos)
        if not match:
            raise ValueError(f'invalid duration {value!r} (use e.g. "500ms", "10s", "5m", "1h30m")')
        total_ns += float(match.group(1)) * _UNITS_NS[match.group(2)]
        pos = match.end()
    if total_ns > _MAX_NS:  # Go's ParseDuration refuses these too; timedelta would overflow (a traceback)
        raise ValueError(f"invalid duration {value!r}: longer than Go's maximum (2562047h47m16s)")
    return timedelta(microseconds=total_ns / 1000)


def format_duration(value: timedelta) -> str:
    """Shortest Go-style rendering ("1h30m", "10s", "250ms") that Nomad parses back exactly."""
    total_us = round(value.total_seconds() * 1_000_000)
    if total_us == 0:
        return "0s"
    if total_us % 1_000_000:
        if total_us % 1000 == 0:
            return f"{total_us // 1000}ms"
        return f"{total_us}us"
    secs = total_us // 1_000_000
    hours, rem = divmod(secs, 3600)
    minutes, seconds = divmod(rem, 60)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if seconds:
        out += f"{seconds}s"
    return out


def _within_spec_max(value: timedelta) -> timedelta:
    if value > MAX_DURATION:
        raise ValueError(
            f"duration {format_duration(value)} is longer than the maximum of {MAX_DURATION_TEXT}"
        )
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_within_spec_max),
    PlainSerializer(format_duration, return_type=str),
]
