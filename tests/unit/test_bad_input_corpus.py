"""Bad input through the real CLI commands: exit 2, one line naming file and field, no traceback.

Runs `render` and `validate` (the typer module exactly as main.py registers it) on a corpus of
broken spec files, --set flags and --values files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nomad_triton.cli import render as render_cli

GOOD = """\
name = "svc"
[driver]
type = "raw_exec"
command = "/bin/true"
[model_repository]
path = "/srv/models"
models = ["mlp"]
"""


def app() -> typer.Typer:
    root = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    render_cli.register(root)
    return root


# (spec file text or None for GOOD, extra files {name: text}, extra CLI args, expected "source: field" prefix)
CASES: list[tuple[str | None, dict[str, str], list[str], str]] = [
    # --- spec files ---
    (GOOD.replace('"svc"', '"has space"'), {}, [], "{spec}: name: "),
    (GOOD.replace('name = "svc"\n', ""), {}, [], "{spec}: name: "),
    ("count = -1\n" + GOOD, {}, [], "{spec}: count: "),
    (
        GOOD.replace("[driver]", "count = 1\n[driver]").replace("count = 1", 'count = "many"'),
        {},
        [],
        "{spec}: count: ",
    ),
    (GOOD.replace('type = "raw_exec"', 'type = "podman"'), {}, [], "{spec}: driver.type: "),
    (GOOD.replace('type = "raw_exec"', 'type = "docker"'), {}, [], "{spec}: driver.image: "),
    (GOOD.replace('command = "/bin/true"', 'comand = "/bin/true"'), {}, [], "{spec}: driver.comand: "),
    (GOOD.replace('models = ["mlp"]', "models = []"), {}, [], "{spec}: model_repository.models: "),
    (
        GOOD.replace('models = ["mlp"]', 'models = ["mlp"]\nartifact = "https://x/y.tgz"'),
        {},
        [],
        "{spec}: model_repository.path: ",
    ),
    (GOOD + "[rollout]\ncanary = -1\n", {}, [], "{spec}: rollout.canary: "),
    (GOOD + "[rollout]\ncanaries = 1\n", {}, [], "{spec}: rollout.canaries: "),
    (GOOD + "[rollout]\nauto_promote = true\n", {}, [], "{spec}: rollout.auto_promote: "),
    (GOOD + '[rollout]\nhealthy_deadline = "forever"\n', {}, [], "{spec}: rollout.healthy_deadline: "),
    (GOOD + '[rollout]\nhealthy_deadline = "20m"\n', {}, [], "{spec}: rollout.healthy_deadline: "),
    (GOOD + '[health]\ntimeout = "30s"\n', {}, [], "{spec}: health.timeout: "),
    (GOOD + '[gpus]\ncount = 1\nmin_memory = "a lot"\n', {}, [], "{spec}: gpus.min_memory: "),
    (GOOD + '[gpus]\nmodel = "A100"\n', {}, [], "{spec}: gpus.count: "),
    (GOOD + "[resources]\nmemory = 1\n", {}, [], "{spec}: resources.memory: "),
    (GOOD + "[ports.http]\nstatic = 99999\n", {}, [], "{spec}: ports.http.static: "),
    (GOOD + "[scaling]\nmin = 5\nmax = 2\n", {}, [], "{spec}: scaling.min: "),
    (GOOD + "[scaling]\nenabled = true\nmin = 2\nmax = 3\n", {}, [], "{spec}: count: "),
    (
        GOOD + "[scaling.policy]\ntarget_utilization = 2.0\n",
        {},
        [],
        "{spec}: scaling.policy.target_utilization: ",
    ),
    (GOOD + '[env]\nNOMAD_TOKEN = "x"\n', {}, [], "{spec}: env: "),
    (GOOD + '[meta]\n"bad key" = "x"\n', {}, [], "{spec}: meta: "),
    ("unknown_top = 1\n" + GOOD, {}, [], "{spec}: unknown_top: "),
    (GOOD + "count = 1\n", {}, [], "{spec}: model_repository.count: "),
    ("name = \n", {}, [], "{spec}: invalid TOML"),
    # --- --set flags ---
    (None, {}, ["--set", "rollout.canary=-1"], "--set rollout.canary=-1: rollout.canary: "),
    (None, {}, ["--set", "count=abc"], "--set count=abc: count: "),
    # a missing key has no writer: it is reported against the spec file
    (None, {}, ["--set", "driver.type=docker"], "{spec}: driver.image: "),
    (None, {}, ["--set", "noequals"], "--set noequals: noequals: "),
    (None, {}, ["--set", "=1"], "--set =1: (empty): "),
    (
        None,
        {},
        ["--set", "model_repository.models.5=x"],
        "--set model_repository.models.5=x: model_repository.models.5: ",
    ),
    (
        None,
        {},
        ["--set", "rollout.min_healthy_time=10"],
        "--set rollout.min_healthy_time=10: rollout.min_healthy_time: ",
    ),
    (
        None,
        {},
        ["--set", "gpus.count=1", "--set", "gpus.preferred_weight=0"],
        "--set gpus.preferred_weight=0: gpus.preferred_weight: ",
    ),
    (
        None,
        {},
        ["--set", "scaling.polcy.max_step_up=2"],
        "--set scaling.polcy.max_step_up=2: scaling.polcy: ",
    ),
    # --- --values files ---
    (
        None,
        {"v.toml": "[rollout]\nmax_parallel = -3\n"},
        ["--values", "{dir}/v.toml"],
        "{dir}/v.toml: rollout.max_parallel: ",
    ),
    (
        None,
        {"v.yaml": "resources:\n  cpu: 0\n"},
        ["--values", "{dir}/v.yaml"],
        "{dir}/v.yaml: resources.cpu: ",
    ),
    (
        None,
        {"v.json": '{"health": {"ready_path": "no-slash"}}'},
        ["--values", "{dir}/v.json"],
        "{dir}/v.json: health.ready_path: ",
    ),
    (None, {"v.yaml": "a: [\n"}, ["--values", "{dir}/v.yaml"], "{dir}/v.yaml: invalid YAML"),
    (None, {"v.txt": "x"}, ["--values", "{dir}/v.txt"], "{dir}/v.txt: unsupported file type"),
    (None, {}, ["--values", "{dir}/missing.toml"], "{dir}/missing.toml: cannot read"),
    (
        None,
        {"a.toml": "count = 2\n", "b.toml": "[gpus]\ncount = -2\n"},
        ["--values", "{dir}/a.toml", "--values", "{dir}/b.toml"],
        "{dir}/b.toml: gpus.count: ",
    ),
]


@pytest.mark.parametrize("command", ["render", "validate"])
@pytest.mark.parametrize(("spec_text", "files", "args", "expected"), CASES)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, command: str, spec_text: str | None, files: dict[str, str], args: list[str], expected: str
) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(GOOD if spec_text is None else spec_text)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    argv = [command, str(spec), *(a.replace("{dir}", str(tmp_path)) for a in args)]
    result = CliRunner().invoke(app(), argv)
    want = "error: " + expected.replace("{spec}", str(spec)).replace("{dir}", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(want), result.stderr
    assert result.stdout == ""


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


def test_json_mode_reports_the_error_as_one_json_line(tmp_path: Path) -> None:
    import json

    spec = tmp_path / "spec.toml"
    spec.write_text(GOOD)
    result = CliRunner().invoke(app(), ["render", str(spec), "--json", "--set", "rollout.canary=-1"])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    payload = json.loads(line)
    assert payload["field"] == "rollout.canary" and payload["source"] == "--set rollout.canary=-1"


def test_good_spec_renders_and_validates(tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(GOOD)
    out = tmp_path / "job.nomad.hcl"
    rendered = CliRunner().invoke(app(), ["render", str(spec), "--out", str(out), "--set", "count=3"])
    assert rendered.exit_code == 0, rendered.output
    assert "count = 3" in out.read_text()
    checked = CliRunner().invoke(app(), ["validate", str(spec), "--json"])
    assert checked.exit_code == 0, checked.output
    assert '"valid": true' in checked.stdout
