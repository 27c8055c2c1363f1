"""Spec input regressions: env/meta scalars given as TOML numbers/booleans, durations beyond Go's range.

Why: `--set` reads VALUE as a TOML literal, so `--set env.OMP_NUM_THREADS=2` was refused with
"Input should be a valid string"; Nomad's HCL maps take numbers and booleans as their string form.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nomad_triton.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "jobs" / "cpu-example.toml"


def test_set_numeric_and_bool_env_and_meta_become_strings() -> None:
    spec = load_spec(EXAMPLE, sets=["env.OMP_NUM_THREADS=2", "env.DEBUG=true", "meta.ratio=0.5"])
    assert spec.env["OMP_NUM_THREADS"] == "2"
    assert spec.env["DEBUG"] == "true"
    assert spec.meta["ratio"] == "0.5"


def test_env_still_refuses_non_scalars() -> None:
    with pytest.raises(SpecError) as err:
        load_spec(EXAMPLE, sets=["env.X=[1, 2]"])
    assert err.value.field == "env.X"


def test_duration_beyond_go_int64_is_bad_input_not_overflow() -> None:
    """`--timeout 999999999999h` / a huge rollout duration raised OverflowError (a traceback)."""
    from nomad_triton.spec import parse_duration

    assert parse_duration("2562047h").total_seconds() == 2562047 * 3600
    with pytest.raises(ValueError, match="longer than Go's maximum"):
        parse_duration("999999999999h")
    with pytest.raises(SpecError) as err:
        load_spec(EXAMPLE, sets=["rollout.healthy_deadline=999999999999h"])
    assert err.value.field == "rollout.healthy_deadline"
