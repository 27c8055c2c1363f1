"""env/meta values given as TOML numbers or booleans (a spec file or `--set env.X=1`) are strings.

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
