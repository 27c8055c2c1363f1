"""Loading specs from files, --values layering, --set overrides and error provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nomad_triton.spec import SpecError, load_spec
from nomad_triton.spec.loader import load_spec_data, parse_set_value

TOML = """
name = "svc"
count = 2
[driver]
type = "raw_exec"
command = "/bin/true"
[model_repository]
path = "models"
models = ["mlp", "relu"]
[rollout]
canary = 0
[env]
A = "1"
"""


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "jobs" / "svc.toml"
    path.parent.mkdir()
    path.write_text(TOML)
    return path


def test_toml_yaml_and_json_load_the_same_spec(spec_file: Path, tmp_path: Path) -> None:
    data, _ = load_spec_data(spec_file)
    (tmp_path / "jobs" / "svc.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "jobs" / "svc.json").write_text(json.dumps(data))
    specs = [load_spec(tmp_path / "jobs" / f"svc.{ext}") for ext in ("toml", "yaml", "json")]
    assert specs[0] == specs[1] == specs[2]
    assert specs[0].count == 2 and specs[0].model_repository.models == ["mlp", "relu"]


def test_relative_raw_exec_repository_is_resolved_next_to_the_spec(spec_file: Path) -> None:
    spec = load_spec(spec_file)
    assert spec.model_repository.path == str((spec_file.parent / "models").resolve())


def test_relative_repository_from_set_is_resolved_against_cwd(
    spec_file: Path, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = load_spec(spec_file, sets=["model_repository.path=elsewhere"])
    assert spec.model_repository.path == str(tmp_path / "elsewhere")


def test_docker_repository_path_is_left_as_written(spec_file: Path) -> None:
    spec = load_spec(spec_file, sets=['driver={type = "docker", image = "img:1"}'])
    assert spec.driver.type == "docker" and spec.model_repository.path == "models"


def test_key_valid_only_for_the_other_driver_is_unknown_without_a_self_suggestion(spec_file: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec_file, sets=["driver.type=docker", "driver.image=img:1"])
    assert info.value.field == "driver.command"
    assert info.value.message == "unknown key 'command'"


def test_values_files_layer_in_order_and_tables_merge(spec_file: Path, tmp_path: Path) -> None:
    first = tmp_path / "a.toml"
    first.write_text('count = 3\n[rollout]\ncanary = 1\n[env]\nB = "2"\n')
    second = tmp_path / "b.yaml"
    second.write_text("count: 4\nenv:\n  A: override\n")
    spec = load_spec(spec_file, values=[first, second])
    assert spec.count == 4
    assert spec.rollout.canary == 1
    assert spec.env == {"A": "override", "B": "2"}


def test_set_is_applied_after_values(spec_file: Path, tmp_path: Path) -> None:
    vals = tmp_path / "v.json"
    vals.write_text('{"count": 5}')
    assert load_spec(spec_file, values=[vals], sets=["count=6"]).count == 6


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", 1),
        ("1.5", 1.5),
        ("true", True),
        ("10s", "10s"),
        ('"quoted"', "quoted"),
        ("[1, 2]", [1, 2]),
        ("hello world", "hello world"),
        ("2024-01-02", "2024-01-02"),
        ("", ""),
        ("a=b", "a=b"),
    ],
)
def test_set_values_are_toml_literals_else_strings(raw: str, expected: object) -> None:
    assert parse_set_value(raw) == expected


def test_set_indexes_lists_and_appends(spec_file: Path) -> None:
    spec = load_spec(spec_file, sets=["model_repository.models.0=first", "model_repository.models.2=third"])
    assert spec.model_repository.models == ["first", "relu", "third"]


def test_set_creates_nested_tables(spec_file: Path) -> None:
    spec = load_spec(spec_file, sets=["scaling.policy.latency_slo_ms=120", "meta.owner=ml"])
    assert spec.scaling.policy.latency_slo_ms == 120
    assert spec.meta == {"owner": "ml"}


def test_error_names_the_set_flag_that_caused_it(spec_file: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec_file, sets=["rollout.canary=-1"])
    assert info.value.line() == (
        "--set rollout.canary=-1: rollout.canary: expected a whole number from 0 to 10000, got -1"
    )


def test_error_names_the_values_file_that_caused_it(spec_file: Path, tmp_path: Path) -> None:
    vals = tmp_path / "bad.yaml"
    vals.write_text("resources:\n  memory: 1\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec_file, values=[vals])
    assert info.value.source == str(vals) and info.value.field == "resources.memory"


def test_error_in_base_file_names_the_base_file(spec_file: Path) -> None:
    spec_file.write_text(TOML.replace("canary = 0", "canary = -2"))
    with pytest.raises(SpecError) as info:
        load_spec(spec_file)
    assert info.value.line().startswith(f"{spec_file}: rollout.canary: ")


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ("count", "count"),
        ("=3", "(empty)"),
        ("a..b=1", "a..b"),
        ("model_repository.models.7=x", "model_repository.models.7"),
        ("model_repository.models.x=1", "model_repository.models.x"),
    ],
)
def test_malformed_set_flags_are_spec_errors(spec_file: Path, item: str, field: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec_file, sets=[item])
    assert info.value.source == f"--set {item}" and info.value.field == field


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("x.toml", "name = ", "invalid TOML"),
        ("x.yaml", "a: [", "invalid YAML"),
        ("x.json", "{", "invalid JSON"),
        ("x.ini", "a=1", "unsupported file type"),
        ("x.yaml", "- a\n- b\n", "top level must be a table"),
    ],
)
def test_unparseable_files_are_spec_errors(tmp_path: Path, name: str, content: str, fragment: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.source == str(path) and fragment in info.value.message
    assert "\n" not in info.value.line()


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.toml")
    assert "cannot read" in info.value.line()


def test_shipped_examples_are_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    cpu = load_spec(root / "jobs" / "cpu-example.toml")
    gpu = load_spec(root / "jobs" / "gpu-example.toml")
    assert cpu.driver.type == "raw_exec" and Path(cpu.model_repository.path or "").is_dir()
    assert all((Path(cpu.model_repository.path or "") / m).is_dir() for m in cpu.model_repository.models)
    assert gpu.driver.type == "docker" and gpu.node_pool == "gpu" and gpu.gpus.count >= 1
