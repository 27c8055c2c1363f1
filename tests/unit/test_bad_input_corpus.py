"""Bad input through the real CLI commands: exit 2, one line naming file and field, no traceback.

Runs `render` and `validate` (the typer module exactly as main.py registers it) on a corpus of
broken spec files, --set flags and --values files; then the whole corpus again through the full
application's Nomad-facing commands (`validate`, `plan`, `deploy`) with NOMAD_ADDR pointing at a
loopback socket this test owns, to prove that bad input never reaches Nomad.
"""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nomad_triton.cli import render as render_cli

# The repository path is relative to the spec's folder (raw_exec); `write_case` creates models/mlp.
ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
name = "svc"
[driver]
type = "raw_exec"
command = "/bin/true"
[model_repository]
path = "models"
models = ["mlp"]
"""
LIBRARY_WORDS = (
    "Input should",
    "Value error",
    "Field required",
    "pydantic",
    "codec",
    "Traceback",
    "list index",
)


def app() -> typer.Typer:
    root = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    render_cli.register(root)
    return root


# (spec file text/bytes or None for GOOD, extra files {name: text/bytes}, extra CLI args,
#  expected "source: field: " prefix)
Case = tuple[str | bytes | None, dict[str, str | bytes], list[str], str]
CASES: list[Case] = [
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
    # --- issue 9: numbers far out of range, strict types, --set paths, binary files ---
    ("count = 1e20\n" + GOOD, {}, [], "{spec}: count: expected a whole number from 0 to 10000, got 1e+20"),
    ("count = 2.0\n" + GOOD, {}, [], "{spec}: count: expected a whole number"),
    ("priority = inf\n" + GOOD, {}, [], "{spec}: priority: expected a whole number from 1 to 100, got inf"),
    (
        GOOD + "[scaling]\nmax = 1e20\n",
        {},
        [],
        "{spec}: scaling.max: expected a whole number from 1 to 10000",
    ),
    (
        GOOD + "[scaling]\nmax = 20000\n",
        {},
        [],
        "{spec}: scaling.max: expected a whole number from 1 to 10000",
    ),
    (
        GOOD + "[resources]\nmemory = 1e20\n",
        {},
        [],
        "{spec}: resources.memory: expected a whole number from 10",
    ),
    (GOOD + "[resources]\ncpu = 2000000\n", {}, [], "{spec}: resources.cpu: expected a whole number from 1"),
    (
        GOOD + "[gpus]\ncount = 65\n",
        {},
        [],
        "{spec}: gpus.count: expected a whole number from 0 to 64, got 65",
    ),
    (GOOD + "[restart]\nattempts = 1e6\n", {}, [], "{spec}: restart.attempts: expected a whole number"),
    (
        GOOD + '[ports.http]\nstatic = "8000"\n',
        {},
        [],
        '{spec}: ports.http.static: expected a whole number from 1 to 65535, got "8000"',
    ),
    (
        GOOD + "[ports.grpc]\nto = 0\n",
        {},
        [],
        "{spec}: ports.grpc.to: expected a whole number from 1 to 65535, got 0",
    ),
    (
        GOOD + '[rollout]\nstagger = " 5s"\n',
        {},
        [],
        "{spec}: rollout.stagger: duration ' 5s' has surrounding whitespace",
    ),
    (
        GOOD + '[rollout]\nprogress_deadline = "9000h"\n',
        {},
        [],
        "{spec}: rollout.progress_deadline: duration 9000h is longer",
    ),
    (
        GOOD + "[rollout]\nauto_revert = 1\n",
        {},
        [],
        "{spec}: rollout.auto_revert: expected true or false, got 1",
    ),
    (
        GOOD + "[scaling.policy]\ntarget_utilization = nan\n",
        {},
        [],
        "{spec}: scaling.policy.target_utilization: expected a finite number",
    ),
    (
        GOOD + "[scaling.policy]\nlatency_slo_ms = 1e20\n",
        {},
        [],
        "{spec}: scaling.policy.latency_slo_ms: expected a number above 0",
    ),
    (
        GOOD + "[scaling.policy]\nmax_step_up = 1e20\n",
        {},
        [],
        "{spec}: scaling.policy.max_step_up: expected a whole number",
    ),
    (GOOD.replace('name = "svc"', "name = 42"), {}, [], "{spec}: name: expected text, got 42"),
    (GOOD + '[env]\nHF_TOKEN = ["abc"]\n', {}, [], "{spec}: env.HF_TOKEN: expected text, got (hidden)"),
    (b"\xff\xfe\x00n\x00a\x00m\x00e", {}, [], "{spec}: not a text file"),
    (GOOD.encode() + b"# caf\xe9\n", {}, [], "{spec}: not a text file"),
    (None, {"v.yaml": b"\x00\x01\x02"}, ["--values", "{dir}/v.yaml"], "{dir}/v.yaml: not a text file"),
    (
        None,
        {},
        ["--set", "count=1e20"],
        "--set count=1e20: count: expected a whole number from 0 to 10000, got 1e+20",
    ),
    (None, {}, ["--set", "count.sub=1"], "--set count.sub=1: count.sub: count is a whole number"),
    (
        None,
        {},
        ["--set", "model_repository.models.x=y"],
        "--set model_repository.models.x=y: model_repository.models.x: models is a list and 'x' is not an index",
    ),
    (
        None,
        {},
        ["--set", "name.first=a"],
        "--set name.first=a: name.first: name is text and has no field 'first'",
    ),
    (
        None,
        {},
        ["--set", "rollout.auto_revert=yes"],
        '--set rollout.auto_revert=yes: rollout.auto_revert: "yes" is not a TOML value',
    ),
    (
        None,
        {},
        ["--set", "resources.memory=lots"],
        '--set resources.memory=lots: resources.memory: "lots" is not a TOML value',
    ),
    (
        None,
        {},
        ["--set", 'ports.metrics.static="9000"'],
        '--set ports.metrics.static="9000": ports.metrics.static: expected a whole number',
    ),
    (
        None,
        {},
        ["--set", "env.API_TOKEN=[1]"],
        "--set env.API_TOKEN=(hidden): env.API_TOKEN: expected text, got (hidden)",
    ),
    (
        None,
        {},
        ["--set", "scaling.policy.tolerance=1"],
        "--set scaling.policy.tolerance=1: scaling.policy.tolerance: expected a number at least 0 and below 1, got 1",
    ),
]

# Bad only for `validate` (it checks a raw_exec job's repository on this host): render does not look.
REPO_CASES: list[Case] = [
    (
        GOOD.replace('path = "models"', 'path = "/nonexistent/models"'),
        {},
        [],
        "{spec}: model_repository.path: /nonexistent/models does not exist",
    ),
    (
        GOOD.replace('models = ["mlp"]', 'models = ["mlp", "bert"]'),
        {},
        [],
        "{spec}: model_repository.models.1: model 'bert' is not in {dir}/models",
    ),
    (
        None,
        {},
        ["--set", "model_repository.models.1=bert"],
        "--set model_repository.models.1=bert: model_repository.models.1: model 'bert' is not in {dir}/models",
    ),
    (
        None,
        {},
        ["--set", "model_repository.path=/nonexistent"],
        "--set model_repository.path=/nonexistent: model_repository.path: /nonexistent does not exist",
    ),
]


def write_case(tmp_path: Path, spec_text: str | bytes | None, files: dict[str, str | bytes]) -> Path:
    # a model `serve` would load, so validate's per-model check passes for the good spec
    if not (tmp_path / "models" / "mlp").exists():
        shutil.copytree(ROOT / "examples" / "models" / "mlp", tmp_path / "models" / "mlp",
                        ignore=shutil.ignore_patterns("__pycache__"))
    spec = tmp_path / "spec.toml"
    text = GOOD if spec_text is None else spec_text
    spec.write_bytes(text if isinstance(text, bytes) else text.encode())
    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return spec


def check_one_line(result: object, expected: str, spec: Path, tmp_path: Path) -> None:
    want = "error: " + expected.replace("{spec}", str(spec)).replace("{dir}", str(tmp_path))
    output = getattr(result, "output", "")
    assert getattr(result, "exit_code", None) == 2, output
    assert isinstance(getattr(result, "exception", None), SystemExit), repr(
        getattr(result, "exception", None)
    )
    lines = getattr(result, "stderr", "").splitlines()
    assert len(lines) == 1 and lines[0].startswith(want), getattr(result, "stderr", "")
    assert not any(word in output for word in LIBRARY_WORDS), output
    assert getattr(result, "stdout", None) == ""


@pytest.mark.parametrize("command", ["render", "validate"])
@pytest.mark.parametrize(("spec_text", "files", "args", "expected"), CASES)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path,
    command: str,
    spec_text: str | bytes | None,
    files: dict[str, str | bytes],
    args: list[str],
    expected: str,
) -> None:
    spec = write_case(tmp_path, spec_text, files)
    argv = [command, str(spec), *(a.replace("{dir}", str(tmp_path)) for a in args)]
    check_one_line(CliRunner().invoke(app(), argv), expected, spec, tmp_path)


@pytest.mark.parametrize(("spec_text", "files", "args", "expected"), REPO_CASES)
def test_validate_checks_a_raw_exec_repository_on_this_host(
    tmp_path: Path,
    spec_text: str | bytes | None,
    files: dict[str, str | bytes],
    args: list[str],
    expected: str,
) -> None:
    spec = write_case(tmp_path, spec_text, files)
    argv = [str(spec), *(a.replace("{dir}", str(tmp_path)) for a in args)]
    check_one_line(CliRunner().invoke(app(), ["validate", *argv]), expected, spec, tmp_path)
    assert CliRunner().invoke(app(), ["render", *argv]).exit_code == 0


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 60


class NomadTrap:
    """A loopback socket standing in for Nomad: it counts every connection (and answers none)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def nomad_trap() -> Iterator[NomadTrap]:
    trap = NomadTrap()
    try:
        yield trap
    finally:
        trap.close()


NOMAD_COMMANDS = [["validate"], ["plan"], ["deploy", "--detach"], ["deploy"]]


def test_no_bad_input_reaches_nomad(tmp_path: Path, nomad_trap: NomadTrap) -> None:
    """Every corpus case through the full app's Nomad-facing commands: exit 2, one line, no request."""
    from nomad_triton.cli.main import app as full_app

    runner = CliRunner()
    env = {"NOMAD_ADDR": nomad_trap.address, "NOMAD_TOKEN": "", "NOMAD_NAMESPACE": "", "NOMAD_REGION": ""}
    checked = 0
    runs = [(case, NOMAD_COMMANDS) for case in CASES] + [(case, [["validate"]]) for case in REPO_CASES]
    for i, ((spec_text, files, args, expected), commands) in enumerate(runs):
        case_dir = tmp_path / f"case{i}"
        case_dir.mkdir()
        spec = write_case(case_dir, spec_text, files)
        for command in commands:
            argv = [*command, str(spec), *(a.replace("{dir}", str(case_dir)) for a in args)]
            result = runner.invoke(full_app, argv, env=env)
            check_one_line(result, expected, spec, case_dir)
            checked += 1
    assert checked == len(NOMAD_COMMANDS) * len(CASES) + len(REPO_CASES)
    assert nomad_trap.connections == 0


def test_the_trap_sees_a_command_that_does_reach_nomad(tmp_path: Path, nomad_trap: NomadTrap) -> None:
    """Control: with good input `validate` does connect, so the zero above is a real observation."""
    from nomad_triton.cli.main import app as full_app

    spec = write_case(tmp_path, None, {})
    result = CliRunner().invoke(full_app, ["validate", str(spec)], env={"NOMAD_ADDR": nomad_trap.address})
    assert result.exit_code == 1, result.output
    assert nomad_trap.connections >= 1


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
    spec = write_case(tmp_path, None, {})
    out = tmp_path / "job.nomad.hcl"
    rendered = CliRunner().invoke(app(), ["render", str(spec), "--out", str(out), "--set", "count=3"])
    assert rendered.exit_code == 0, rendered.output
    assert "count = 3" in out.read_text()
    checked = CliRunner().invoke(app(), ["validate", str(spec), "--json"])
    assert checked.exit_code == 0, checked.output
    assert '"valid": true' in checked.stdout


SHIPPED = sorted((Path(__file__).resolve().parents[2] / "jobs").glob("*.toml"))
MUTATIONS = [
    ("count=1e20", "count: expected a whole number from 0 to 10000, got 1e+20"),
    ("scaling.max=1e20", "scaling.max: expected a whole number from 1 to 10000, got 1e+20"),
    ("resources.memory=1e20", "resources.memory: expected a whole number from 10 to 16777216, got 1e+20"),
    ('ports.http.static="8000"', 'ports.http.static: expected a whole number from 1 to 65535, got "8000"'),
    ('rollout.min_healthy_time=" 5s"', "rollout.min_healthy_time: duration ' 5s' has surrounding whitespace"),
    ("count.sub=1", "count.sub: count is a number and has no field 'sub'"),
    ("model_repository.models.x=y", "model_repository.models.x: models is a list and 'x' is not an index"),
]


@pytest.mark.parametrize("shipped", SHIPPED, ids=[p.name for p in SHIPPED])
@pytest.mark.parametrize(("item", "message"), MUTATIONS)
def test_mutated_shipped_examples_fail_with_one_line(shipped: Path, item: str, message: str) -> None:
    """The mutations that found these defects, applied to every shipped example spec."""
    assert CliRunner().invoke(app(), ["validate", str(shipped)]).exit_code == 0  # the example itself is fine
    for command in ("render", "validate"):
        result = CliRunner().invoke(app(), [command, str(shipped), "--set", item])
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"error: --set {item}: {message}"), line
