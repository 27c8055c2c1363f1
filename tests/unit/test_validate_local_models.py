"""`validate` looks into a local (raw_exec path) repository: every named model must load in `serve`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nomad_triton.cli import usage
from nomad_triton.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
REPO = ROOT / "examples" / "triton-repo"


def _spec(tmp_path: Path, models: list[str]) -> Path:
    repo = tmp_path / "repo"
    if not repo.exists():
        shutil.copytree(REPO, repo)
    path = tmp_path / "job.toml"
    path.write_text(
        f'name = "v"\n[driver]\ntype = "raw_exec"\ncommand = "/bin/true"\n'
        f'[model_repository]\npath = "{repo}"\nmodels = {json.dumps(models)}\n'
    )
    return path


def test_good_local_repository_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert usage.run(app, ["validate", "--local", str(_spec(tmp_path, ["linear_onnx", "add_sub"]))]) == 0
    assert "ok: job 'v'" in capsys.readouterr().out


def test_missing_model_folder_is_named_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The repository check (spec loader) names a model with no folder before any model is loaded."""
    spec = _spec(tmp_path, ["linear_onnx", "ghost"])
    assert usage.run(app, ["validate", "--local", str(spec)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {spec}: model_repository.models.1: model 'ghost' is not in "), line


def test_broken_models_are_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path, ["linear_onnx", "add_sub"])
    config = tmp_path / "repo" / "linear_onnx" / "config.pbtxt"
    config.write_text(config.read_text().replace('platform: "onnxruntime_onnx"', 'platform: "tensorrt_plan"'))
    (tmp_path / "repo" / "add_sub" / "config.pbtxt").unlink()
    assert usage.run(app, ["validate", "--local", str(spec)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {spec}: model_repository.models.0: {config}: platform: model 'linear_onnx' "
                           "uses 'tensorrt_plan'") and line.endswith("(+1 more)"), line
    assert usage.run(app, ["validate", "--local", str(spec), "--json"]) == 2
    body = json.loads(capsys.readouterr().err)
    assert len(body["problems"]) == 2
    assert body["problems"][1].startswith(f"{spec}: model_repository.models.1: "), body["problems"]
    assert "add_sub" in body["problems"][1], body["problems"]


def test_triton_repo_job_example_validates_with_its_models() -> None:
    from nomad_triton.render import validate_local
    from nomad_triton.spec import load_spec
    from nomad_triton.spec.local_models import check_local_models

    spec = load_spec(ROOT / "jobs" / "triton-repo-example.toml")
    assert spec.repository_path == str(REPO.resolve())
    assert validate_local(spec) == [] and check_local_models(spec) == []
