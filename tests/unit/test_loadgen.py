"""examples/loadgen.py argument handling (pure parsing; its traffic is exercised end to end in
tests/e2e/test_autoscale_triton.py against real PyTriton)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

PATH = Path(__file__).resolve().parents[2] / "examples" / "loadgen.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("loadgen_example", PATH)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


loadgen = _load()


@pytest.mark.parametrize(("text", "duration", "rate"), [
    ("20s@50rps", 20.0, 50.0), ("500ms@10", 0.5, 10.0), ("1m@0", 60.0, 0.0), ("1.5s @ 2.5/s", 1.5, 2.5),
    ("3@7", 3.0, 7.0),
])
def test_phase_parse(text: str, duration: float, rate: float) -> None:
    p = loadgen.Phase.parse(text)
    assert (p.duration_s, p.rate) == (duration, rate)


@pytest.mark.parametrize("text", ["20s", "@50", "0s@5", "20x@5", "20s@-1", "fast"])
def test_bad_phase_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="--phase"):
        loadgen.Phase.parse(text)


@pytest.mark.parametrize("argv", [
    [],  # no target
    ["--url", "http://127.0.0.1:8000"],  # scheme
    ["--url", "127.0.0.1:8000", "--phase", "soon@5"],
    ["--url", "127.0.0.1:8000", "--concurrency", "0"],
])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        loadgen.parse_args(argv)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_report_percentiles_and_rate() -> None:
    st = loadgen.PhaseStats(0, 10.0, 2.0, elapsed_s=2.0, sent=20, ok=20, latencies_ms=[float(i) for i in range(1, 21)])
    r = st.report()
    assert r["achieved_rps"] == 10.0 and r["p50_ms"] == 10.5 and r["p99_ms"] > r["p95_ms"] > r["p50_ms"]
    assert loadgen.PhaseStats(1, 0.0, 1.0, elapsed_s=1.0).report()["p50_ms"] is None
