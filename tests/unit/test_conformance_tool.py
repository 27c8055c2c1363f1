"""tools/conformance.py without Go: one clear line naming what is missing, exit 2, nothing started."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "conformance.py"


def _load():
    spec = importlib.util.spec_from_file_location("conformance_tool", TOOL)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_go_is_one_clear_line_and_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                  tmp_path: Path) -> None:
    tool = _load()
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no go, nothing else either
    monkeypatch.setattr(tool, "GO_FALLBACKS", (str(tmp_path / "go"),))
    assert tool.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("conformance: the Go toolchain is not installed"), err
    assert "Go 1.26+" in err[0] and "PATH" in err[0]


def test_go_found_on_path_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tool = _load()
    fake = tmp_path / "go"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert tool.find_go() == str(fake)
