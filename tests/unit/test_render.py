"""Renderer: HCL escaping round trips through python-hcl2, job structure, sandbox and strictness."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import hcl2
import jinja2
import pytest
from jinja2.sandbox import SecurityError

from nomad_triton import render
from nomad_triton.render import (
    hcl_string,
    make_environment,
    render_job,
    to_hcl,
    unquote_hcl_string,
    validate_local,
)
from nomad_triton.spec import DeploymentSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]

TRICKY = [
    "plain",
    'say "hi"',
    "back\\slash",
    "trailing\\",
    "line1\nline2\r\n",
    "tab\there",
    "${NOMAD_PORT_http}",
    "$${already}",
    "%{ if true }x%{ endif }",
    "%%{x}",
    "dollar at end $",
    "percent at end %",
    "{braces} $ { % {",
    "unicode: 日本語 ünïcødé 🚀",
    "ctl:\x01\x1f\x7f",
    "",
    '\\"${x}\\"',
]


def parsed_value(literal: str) -> str:
    doc = hcl2.loads(f"x = {literal}\n")
    return unquote_hcl_string(doc["x"])


@pytest.mark.parametrize("value", TRICKY)
def test_hcl_string_round_trips_through_python_hcl2(value: str) -> None:
    literal = hcl_string(value)
    assert "\n" not in literal
    assert parsed_value(literal) == value


@pytest.mark.parametrize("value", ["${x}", "a${b}c", "%{ for x in y }"])
def test_user_interpolation_is_escaped_never_live(value: str) -> None:
    literal = hcl_string(value)
    # every ${ / %{ in the literal must be preceded by its escape twin
    body = literal.replace("$${", "").replace("%%{", "")
    assert "${" not in body and "%{" not in body


def test_unicode_is_kept_not_escaped() -> None:
    assert hcl_string("ü🚀") == '"ü🚀"'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (1.5, "1.5"),
        (timedelta(minutes=5), '"5m"'),
        (["a", 1], '["a", 1]'),
        ({}, "{}"),
    ],
)
def test_to_hcl_scalars_and_lists(value: Any, expected: str) -> None:
    assert to_hcl(value) == expected


def test_to_hcl_map_quotes_keys_and_parses() -> None:
    text = to_hcl({"a.b": "x", 'q"k': "${y}"})
    doc = hcl2.loads(f"m = {text}\n")
    assert {unquote_hcl_string(k): unquote_hcl_string(v) for k, v in doc["m"].items()} == {
        "a.b": "x",
        'q"k': "${y}",
    }


def test_to_hcl_rejects_unknown_types() -> None:
    with pytest.raises(TypeError):
        to_hcl(object())


def _only(blocks: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    assert len(blocks) == 1 and len(blocks[0]) == 1
    ((label, body),) = blocks[0].items()
    return unquote_hcl_string(label), body


def test_cpu_example_renders_idiomatic_hcl() -> None:
    spec = load_spec(ROOT / "jobs" / "cpu-example.toml")
    doc = hcl2.loads(render_job(spec))
    name, job = _only(doc["job"])
    assert name == "triton-cpu"
    assert unquote_hcl_string(job["type"]) == "service"
    assert unquote_hcl_string(job["node_pool"]) == "default"
    _, group = _only(job["group"])
    assert group["count"] == 1
    ports = [unquote_hcl_string(label) for p in group["network"][0]["port"] for label in p]
    assert ports == ["http", "grpc", "metrics"]
    service = group["service"][0]
    assert unquote_hcl_string(service["provider"]) == "nomad"
    paths = [unquote_hcl_string(c["path"]) for c in service["check"]]
    assert paths == ["/v2/health/ready", "/v2/models/mlp/ready", "/v2/models/relu_onnx/ready"]
    assert {unquote_hcl_string(c["interval"]) for c in service["check"]} == {"2s"}
    update = group["update"][0]
    assert update["max_parallel"] == 1 and update["auto_revert"] is True
    assert unquote_hcl_string(update["healthy_deadline"]) == "2m"
    scaling = group["scaling"][0]
    assert (scaling["min"], scaling["max"], scaling["enabled"]) == (1, 3, True)
    assert unquote_hcl_string(scaling["policy"][0]["cooldown_down"]) == "20s"
    tname, task = _only(group["task"])
    assert tname == "server" and unquote_hcl_string(task["driver"]) == "raw_exec"
    config = task["config"][0]
    assert [unquote_hcl_string(a) for a in config["args"]] == [
        "serve",
        "--models",
        str(ROOT / "examples/models"),
    ]
    env = {unquote_hcl_string(k): unquote_hcl_string(v) for k, v in task["env"].items()}
    assert env["NOMAD_TRITON_MODELS"] == "mlp,relu_onnx" and env["OMP_NUM_THREADS"] == "1"
    assert "device" not in task["resources"][0]


def test_gpu_example_renders_device_constraints_with_runtime_interpolation() -> None:
    spec = load_spec(ROOT / "jobs" / "gpu-example.toml")
    text = render_job(spec)
    doc = hcl2.loads(text)
    _, job = _only(doc["job"])
    assert unquote_hcl_string(job["node_pool"]) == "gpu"
    _, group = _only(job["group"])
    assert group["update"][0]["canary"] == 1 and group["update"][0]["auto_promote"] is True
    assert unquote_hcl_string(group["volume"][0]['"models"']["source"]) == "triton-models"
    _, task = _only(group["task"])
    config = task["config"][0]
    assert unquote_hcl_string(config["image"]) == "ghcr.io/example/nomad-triton:0.1.0"
    assert config["shm_size"] == 2048 * 1024 * 1024
    assert unquote_hcl_string(config["ulimit"][0]["memlock"]) == "-1"
    dname, device = _only(task["resources"][0]["device"])
    assert dname == "nvidia/gpu" and device["count"] == 1
    constraints = {unquote_hcl_string(c["attribute"]): c for c in device["constraint"]}
    # Runtime interpolations stay literal (not $${...}) so Nomad evaluates them on the client.
    assert 'attribute = "${device.attr.memory}"' in text
    assert unquote_hcl_string(constraints["${device.attr.memory}"]["value"]) == "16 GiB"
    assert unquote_hcl_string(constraints["${device.attr.memory}"]["operator"]) == ">="
    assert unquote_hcl_string(constraints["${device.model}"]["value"]) == "A100|H100"
    affinity = device["affinity"][0]
    assert unquote_hcl_string(affinity["value"]) == "H100" and affinity["weight"] == 50


def _spec(**over: Any) -> DeploymentSpec:
    data: dict[str, Any] = {
        "name": "t",
        "driver": {"type": "raw_exec", "command": "/bin/x"},
        "model_repository": {"path": "/m", "models": ["a"]},
    }
    data.update(over)
    return DeploymentSpec.model_validate(data)


def test_bridge_mode_maps_to_triton_container_ports() -> None:
    spec = _spec(
        driver={"type": "docker", "image": "i", "network_mode": "bridge"}, ports={"http": {"static": 18000}}
    )
    doc = hcl2.loads(render_job(spec))
    _, group = _only(_only(doc["job"])[1]["group"])
    ports = {unquote_hcl_string(k): v for p in group["network"][0]["port"] for k, v in p.items()}
    assert ports["http"]["static"] == 18000 and ports["http"]["to"] == 8000 and ports["metrics"]["to"] == 8002
    assert unquote_hcl_string(group["network"][0]["mode"]) == "bridge"


def test_artifact_source_downloads_into_local_models() -> None:
    spec = _spec(
        driver={"type": "docker", "image": "i"},
        model_repository={"artifact": "https://example.com/m.tar.gz?x=${y}", "models": ["a"]},
    )
    doc = hcl2.loads(render_job(spec))
    _, task = _only(_only(_only(doc["job"])[1]["group"])[1]["task"])
    assert unquote_hcl_string(task["artifact"][0]["source"]) == "https://example.com/m.tar.gz?x=${y}"
    assert "--models" in [unquote_hcl_string(a) for a in task["config"][0]["args"]]
    assert "/local/models" in [unquote_hcl_string(a) for a in task["config"][0]["args"]]


def test_raw_exec_artifact_is_relative_to_the_task_dir() -> None:
    spec = _spec(model_repository={"artifact": "https://example.com/m.tar.gz", "models": ["a"]})
    assert spec.repository_path == "local/models"
    assert '"--models", "local/models"' in render_job(spec)


def test_per_model_checks_can_be_turned_off_and_scaling_block_omitted() -> None:
    text = render_job(_spec(health={"per_model": False}))
    assert "/v2/models/" not in text and "scaling {" not in text


def test_limited_reschedule_renders_attempts_and_interval() -> None:
    spec = _spec(
        reschedule={"unlimited": False, "attempts": 3, "interval": "1h", "delay_function": "constant"}
    )
    resched = hcl2.loads(render_job(spec))["job"][0]['"t"']["group"][0]['"triton"']["reschedule"][0]
    # `unlimited = false` must be written: Nomad fills a missing `unlimited` with true for service
    # jobs (its default reschedule policy), which would silently ignore attempts and interval.
    assert resched["attempts"] == 3 and resched["unlimited"] is False and "max_delay" not in resched


def test_templates_are_found_as_package_data() -> None:
    assert (render._templates_dir() / render.MAIN_TEMPLATE).is_file()


def test_environment_is_sandboxed_and_strict(tmp_path: Path) -> None:
    (tmp_path / "undef.j2").write_text("x = {{ nope }}")
    (tmp_path / "escape.j2").write_text("{{ ''.__class__.__mro__ }}")
    env = make_environment(tmp_path)
    with pytest.raises(jinja2.UndefinedError):
        env.get_template("undef.j2").render()
    with pytest.raises(SecurityError):
        env.get_template("escape.j2").render()


def test_validate_local_accepts_the_examples() -> None:
    assert validate_local(load_spec(ROOT / "jobs" / "cpu-example.toml")) == []
    assert validate_local(load_spec(ROOT / "jobs" / "gpu-example.toml")) == []


def test_validate_local_reports_a_template_that_drops_model_checks(tmp_path: Path, monkeypatch) -> None:
    src = render._templates_dir()
    for rel in [render.MAIN_TEMPLATE, *(f"partials/{p.name}" for p in (src / "partials").glob("*.j2"))]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((src / rel).read_text())
    services = tmp_path / "partials" / "services.hcl.j2"
    services.write_text(
        services.read_text().replace("{% for check in checks %}", "{% for check in checks[:1] %}")
    )
    monkeypatch.setattr(render, "environment", lambda: make_environment(tmp_path))
    assert validate_local(_spec()) == ["missing health check on /v2/models/a/ready"]


def test_validate_local_reports_unparseable_output(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / render.MAIN_TEMPLATE).write_text("job {{ spec.name | hcl }} {\n  broken = \n")
    monkeypatch.setattr(render, "environment", lambda: make_environment(tmp_path))
    problems = validate_local(_spec())
    assert len(problems) == 1 and problems[0].startswith("rendered HCL does not parse")


def test_pytriton_workspace_lives_in_the_task_dir_unless_the_user_sets_it() -> None:
    text = render_job(_spec())
    assert (
        '"PYTRITON_HOME"' in text and '= "/tmp/pytriton-${NOMAD_SHORT_ALLOC_ID}"' in text
    )  # runtime interpolation, literal
    task = hcl2.loads(render_job(_spec(env={"PYTRITON_HOME": "/cache/${x}"})))["job"][0]['"t"']["group"][0][
        '"triton"'
    ]["task"][0]['"server"']
    env = {unquote_hcl_string(k): unquote_hcl_string(v) for k, v in task["env"].items()}
    assert env["PYTRITON_HOME"] == "/cache/${x}"
