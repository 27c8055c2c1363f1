"""Usage errors are one line naming the command and flag, exit 2, and JSON when --json was given.

Why: typer's default is a multi-line rich box even under --json, which a CI step parsing stderr
as JSON cannot read. Nothing is contacted: these fail while parsing arguments.
"""

from __future__ import annotations

import json

import pytest

from nomad_triton.cli import usage
from nomad_triton.cli.main import app


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["render", "x.toml", "--bogus"], "nomad-triton render: No such option: --bogus"),
        (["scale"], "nomad-triton scale: Missing argument 'job'"),
        (["probe", "j", "--timeout", "abc"], "nomad-triton probe: Invalid value for '--timeout'"),
        (["nosuchcmd"], "nomad-triton: No such command 'nosuchcmd'"),
        (["dev", "bogus"], "nomad-triton dev: No such command 'bogus'"),
    ],
)
def test_usage_error_is_one_line_exit_2(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert usage.run(app, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {fragment}"), err
    assert usage.run(app, [*args, "--json"]) == 2
    cap = capsys.readouterr()
    body = json.loads(cap.err)
    assert cap.out == "" and body["exit_code"] == 2 and body["error"].startswith(fragment), body


def test_help_and_command_exit_codes_pass_through(capsys: pytest.CaptureFixture[str]) -> None:
    assert usage.run(app, ["--help"]) == 0
    assert "Usage: nomad-triton" in capsys.readouterr().out
    assert usage.run(app, ["render", "/nonexistent/spec.toml", "--json"]) == 2  # the command's own fail()
    assert json.loads(capsys.readouterr().err)["source"] == "/nonexistent/spec.toml"


def test_unhandled_ctrl_c_is_a_json_line_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command without its own KeyboardInterrupt handling (probe) used to exit 130 silently."""
    from nomad_triton.cli import probe

    def interrupted(coro: object, *_a: object, **_k: object) -> None:
        coro.close()  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(probe.asyncio, "run", interrupted)
    assert usage.run(app, ["probe", "--endpoint", "a=127.0.0.1:1", "--json"]) == 130
    assert json.loads(capsys.readouterr().err) == {"error": "interrupted", "exit_code": 130}
