"""`deploy` in-process against a scripted Nomad on loopback: the losing side of a concurrent deploy.

Two deploys that planned against the same JobModifyIndex: Nomad accepts the first register and
refuses the second with "Enforcing job modify index". The CLI must say so in one line, suggest
planning again, and exit 1 — without ever printing the token.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from nomad_triton.cli.main import app

TOKEN = "c0ffee00-1111-4222-8333-444455556666"


def test_losing_concurrent_deploy_gets_clear_conflict_exit_1(fake_nomad, tmp_path: Path) -> None:
    (tmp_path / "models" / "m").mkdir(parents=True)
    spec = tmp_path / "race.toml"
    spec.write_text(f'''
name = "race"
[driver]
type = "raw_exec"
command = "sleep"
args = ["60"]
[model_repository]
path = "{tmp_path / 'models'}"
models = ["m"]
''')
    job = {"ID": "race", "Name": "race", "TaskGroups": [{"Name": "triton", "Count": 1}]}
    fake_nomad.on("POST", "/v1/jobs/parse", 200, job)
    fake_nomad.on("POST", "/v1/job/race/plan", 200, {"JobModifyIndex": 5, "Diff": {"Type": "Edited"}})
    fake_nomad.on("POST", "/v1/job/race", 500,
                  "Enforcing job modify index 5: job exists with conflicting job modify index: 6")
    res = CliRunner().invoke(app, ["deploy", str(spec), "--address", fake_nomad.url, "--token", TOKEN])
    assert res.exit_code == 1, res.output
    assert "Enforcing job modify index 5" in res.output and "plan again" in res.output
    assert TOKEN not in res.output
    register = [r for r in fake_nomad.seen if r.path == "/v1/job/race"][0]
    assert register.body["EnforceIndex"] is True and register.body["JobModifyIndex"] == 5
    assert register.body["PreserveCounts"] is True
    assert register.headers["X-Nomad-Token"] == TOKEN
