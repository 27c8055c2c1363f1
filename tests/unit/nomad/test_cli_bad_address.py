"""A malformed Nomad address is bad input: one line naming NOMAD_ADDR or --address, exit 2.

Why: left to requests it surfaced as "GET /v1/job/x: Failed to parse ..." with exit 1, which a CI
pipeline reads as "Nomad is down" and retries instead of fixing its configuration. Nothing is
contacted here (the address is rejected before any request), so these are unit tests.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nomad_triton.cli.main import app
from nomad_triton.nomad.settings import ConnectionSettings, check_address

BAD = ["notaurl", "http://127.0.0.1:99999", "http://", "ftp://nomad:4646", "https://nomad:abc", "http://h:0"]


@pytest.mark.parametrize("addr", BAD)
def test_check_address_rejects_and_names_source(addr: str) -> None:
    with pytest.raises(ValueError, match=r"^NOMAD_ADDR: invalid address"):
        check_address(addr, "NOMAD_ADDR")


def test_check_address_keeps_good_ones() -> None:
    assert check_address("https://nomad.example:4646/", "NOMAD_ADDR") == "https://nomad.example:4646"
    assert check_address("http://[::1]:4646", "NOMAD_ADDR") == "http://[::1]:4646"
    assert ConnectionSettings.from_env({}).address == "http://127.0.0.1:4646"


def test_flag_is_named_when_the_flag_is_bad() -> None:
    with pytest.raises(ValueError, match=r"^--address: "):
        ConnectionSettings.from_env({"NOMAD_ADDR": "http://ok:1"}, address="bad")
    with pytest.raises(ValueError, match=r"^NOMAD_ADDR: "):
        ConnectionSettings.from_env({"NOMAD_ADDR": "bad"})


@pytest.mark.parametrize(
    "args",
    [
        ["status", "web"],
        ["watch", "web", "--timeout", "1s"],
        ["stop", "web"],
        ["probe", "web"],
        ["autoscale", "run", "web", "--duration", "1"],
    ],
)
def test_every_command_exits_2_with_json(args: list[str]) -> None:
    res = CliRunner().invoke(app, [*args, "--json"], env={"NOMAD_ADDR": "http://127.0.0.1:99999"})
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    body = json.loads(lines[0])
    assert body["exit_code"] == 2 and body["error"].startswith("NOMAD_ADDR: invalid address"), body
