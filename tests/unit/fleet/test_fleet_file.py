"""The fleet file and multi-pool specs: every bad input is exit 2 and one line naming file, stage/pool, field.

Runs the real `fleet plan` / `fleet deploy` commands (typer's CliRunner on the registered app):
bad input ends them before any Nomad is contacted, so no cluster is needed (the address is a
closed port: reaching it would be a different error and exit code).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nomad_triton.cli.main import app
from nomad_triton.fleet.model import FleetError, load_fleet
from nomad_triton.render import render_job, validate_local
from nomad_triton.spec import SpecError, load_spec

SPEC = """\
name = "svc"
count = 1
[driver]
type = "raw_exec"
command = "/bin/true"
[model_repository]
path = "/srv/models"
models = ["mlp"]
[scaling]
enabled = true
min = 1
max = 3
"""

POOLS = SPEC + """
[gpus]
count = 1
[[pools]]
name = "gpu-a100"
count = 2
gpus = { model = "A100" }
scaling = { max = 4 }
[[pools]]
name = "gpu-l4"
node_pool = "l4-nodes"
datacenters = ["dc2"]
resources = { memory = 4096 }
"""

FLEET = """\
[[stages]]
name = "staging"
specs = ["svc.toml"]
[[stages]]
name = "canary"
specs = [{ spec = "pools.toml", pool = "gpu-l4" }]
verify = true
soak = "30s"
max_error_ratio = 0.01
[[stages]]
name = "prod"
specs = [{ spec = "pools.toml", pools = ["gpu-a100"] }]
"""


def write(tmp: Path, fleet: str, **specs: str) -> Path:
    (tmp / "svc.toml").write_text(SPEC)
    (tmp / "pools.toml").write_text(POOLS)
    for name, text in specs.items():
        (tmp / f"{name}.toml").write_text(text)
    path = tmp / "fleet.toml"
    path.write_text(fleet)
    return path


def test_good_fleet_expands_pools_in_stage_order(tmp_path: Path) -> None:
    fleet = load_fleet(write(tmp_path, FLEET))
    assert [s.name for s in fleet.stages] == ["staging", "canary", "prod"]
    assert [[j.name for j in s.jobs] for s in fleet.stages] == [["svc"], ["svc-gpu-l4"], ["svc-gpu-a100"]]
    canary = fleet.stages[1]
    assert canary.gate.verify and canary.gate.soak.total_seconds() == 30 and canary.gate.max_error_ratio == 0.01
    [l4] = canary.jobs
    assert l4.pool == "gpu-l4" and l4.spec.node_pool == "l4-nodes" and l4.spec.datacenters == ["dc2"]


def test_a_spec_without_pool_selection_deploys_every_pool(tmp_path: Path) -> None:
    fleet = load_fleet(write(tmp_path, '[[stages]]\nspecs = ["pools.toml"]\n'))
    assert [j.name for j in fleet.jobs] == ["svc-gpu-a100", "svc-gpu-l4"]
    assert fleet.stages[0].name == "stage-1"


def test_pools_render_one_complete_job_each(tmp_path: Path) -> None:
    (tmp_path / "pools.toml").write_text(POOLS)
    spec = load_spec(tmp_path / "pools.toml")
    a100, l4 = spec.job_specs()
    assert (a100.name, a100.node_pool, a100.count, a100.gpus.count, a100.gpus.model) == (
        "svc-gpu-a100", "gpu-a100", 2, 1, "A100")
    assert (a100.scaling.min, a100.scaling.max) == (1, 4)
    assert (l4.name, l4.node_pool, l4.count, l4.resources.memory, l4.resources.cpu) == (
        "svc-gpu-l4", "l4-nodes", 1, 4096, 1000)
    assert l4.scaling.max == 3 and l4.gpus.model is None
    for job in (a100, l4):
        assert not job.pools and validate_local(job) == []
        hcl = render_job(job)
        assert hcl.count('job "') == 1 and f'job "{job.name}"' in hcl
        assert f'node_pool   = "{job.node_pool}"' in hcl


def test_a_spec_without_pools_keeps_its_meaning(tmp_path: Path) -> None:
    (tmp_path / "svc.toml").write_text(SPEC)
    spec = load_spec(tmp_path / "svc.toml")
    assert spec.pools == [] and spec.job_specs() == [spec]


def _cli(args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(app, args, env={"NOMAD_ADDR": "http://127.0.0.1:9"})
    return res.exit_code, res.output


BAD_FLEETS = [
    # unknown spec
    (FLEET.replace('"svc.toml"', '"nope.toml"'), {}, "stages.0 (staging): specs.0.spec: spec file 'nope.toml' not found"),
    # empty stage
    (FLEET.replace('specs = ["svc.toml"]', "specs = []"), {}, "stages.0 (staging): specs: a stage needs at least one spec"),
    ('[[stages]]\nname = "x"\n', {}, "stages.0 (x): specs: required field is missing"),
    ("name = 'f'\n", {}, "stages: required field is missing"),
    # duplicate job name across the fleet
    (FLEET + '[[stages]]\nname = "again"\nspecs = ["svc.toml"]\n', {},
     "stages.3 (again): specs.0: job 'svc' is already in the fleet at stages.0 (staging): specs.0"),
    (FLEET.replace('pools = ["gpu-a100"]', 'pools = ["gpu-l4"]'), {},
     "stages.2 (prod): specs.0: job 'svc-gpu-l4' is already in the fleet at stages.1 (canary): specs.0"),
    # a pool the spec does not declare
    (FLEET.replace('pool = "gpu-l4"', 'pool = "gpu-h100"'), {},
     "stages.1 (canary): specs.0.pool: spec pools.toml has no pool 'gpu-h100' (its pools: gpu-a100, gpu-l4)"),
    (FLEET.replace('pools = ["gpu-a100"]', 'pools = ["gpu-a100", "tpu"]'), {},
     "stages.2 (prod): specs.0.pools.1: spec pools.toml has no pool 'tpu'"),
    # unknown keys and bad values in the fleet file itself
    (FLEET.replace("verify = true", "verfiy = true"), {}, "stages.1 (canary): verfiy: unknown key 'verfiy'"),
    (FLEET.replace('soak = "30s"', 'soak = "30 parsecs"'), {}, "stages.1 (canary): soak: "),
    (FLEET.replace("max_error_ratio = 0.01", "max_error_ratio = 2"), {}, "stages.1 (canary): max_error_ratio: "),
    (FLEET.replace('pool = "gpu-l4"', 'pool = "gpu-l4", pools = ["gpu-a100"]'), {},
     "stages.1 (canary): specs.0: set pool or pools, not both"),
    (FLEET + '[[stages]]\nname = "prod"\nspecs = [{ spec = "other.toml" }]\n',
     {"other": SPEC.replace('"svc"', '"other"')}, "stages.3.name: stage name 'prod' is used twice"),
]


@pytest.mark.parametrize(("fleet", "extra", "expected"), BAD_FLEETS)
@pytest.mark.parametrize("command", ["plan", "deploy"])
def test_bad_fleet_is_exit_2_one_line(tmp_path: Path, command: str, fleet: str, extra: dict[str, str],
                                      expected: str) -> None:
    path = write(tmp_path, fleet, **extra)
    with pytest.raises(FleetError):
        load_fleet(path)
    code, out = _cli(["fleet", command, str(path)])
    assert code == 2, out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith(f"error: {path}: {expected}"), out
    assert "Traceback" not in out


BAD_POOLS = [
    # a pool overriding a field that does not exist
    ("[[pools]]\nname = 'a'\ngpu = { count = 1 }\n", "pools.0.gpu: unknown key 'gpu'"),
    ("[[pools]]\nname = 'a'\nimage = 'x'\n", "pools.0.image: unknown key 'image'"),
    ("[[pools]]\nname = 'a'\nresources = { disk = 10 }\n", "pools.0.resources.disk: unknown key 'disk'"),
    ("[[pools]]\nname = 'a'\nscaling = { policy = {} }\n", "pools.0.scaling.policy: unknown key 'policy'"),
    # a resulting job name Nomad would refuse
    ("[[pools]]\nname = '" + "p" * 130 + "'\n", "pools.0.name: job name 'svc-ppp"),
    ("[[pools]]\nname = 'bad pool'\n", "pools.0.name: pool name 'bad pool' must be letters"),
    # the pool's job must be valid on its own
    ("[[pools]]\nname = 'a'\ncount = 7\n", "pools.0.count: in the job for pool 'a': count 7 must lie within"),
    ("[[pools]]\nname = 'a'\ngpus = { model = 'A100' }\n", "pools.0.gpus.count: in the job for pool 'a': "),
    ("[[pools]]\nname = 'a'\n[[pools]]\nname = 'a'\n", "pools.1.name: pool 'a' is declared twice"),
]


@pytest.mark.parametrize(("pools", "expected"), BAD_POOLS)
def test_bad_pool_names_spec_file_stage_and_field(tmp_path: Path, pools: str, expected: str) -> None:
    path = write(tmp_path, '[[stages]]\nname = "s1"\nspecs = ["bad.toml"]\n', bad=SPEC + pools)
    with pytest.raises(SpecError):
        load_spec(tmp_path / "bad.toml")
    code, out = _cli(["fleet", "plan", str(path)])
    assert code == 2, out
    [line] = out.strip().splitlines()
    assert line.startswith(f"error: {path}: stages.0 (s1): specs.0: {tmp_path / 'bad.toml'}: {expected}"), line


def test_single_job_commands_refuse_a_multi_pool_spec(tmp_path: Path) -> None:
    (tmp_path / "pools.toml").write_text(POOLS)
    for command in ("plan", "deploy"):
        code, out = _cli([command, str(tmp_path / "pools.toml")])
        assert code == 2, out
        assert "pools: this spec renders 2 jobs (svc-gpu-a100, svc-gpu-l4)" in out and "fleet" in out
    code, out = _cli(["render", str(tmp_path / "pools.toml")])
    assert code == 0 and out.count('\njob "') + out.startswith('job "') >= 2, out
    assert 'job "svc-gpu-a100"' in out and 'job "svc-gpu-l4"' in out


def test_rollback_all_needs_rollback_on_failure(tmp_path: Path) -> None:
    code, out = _cli(["fleet", "deploy", str(write(tmp_path, FLEET)), "--all"])
    assert code == 2 and "--all" in out, out
