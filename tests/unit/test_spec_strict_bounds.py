"""Every numeric field is bounded, every type is strict, and every error is in our words.

The field lists are not written by hand: they are walked from the pydantic models, so a numeric
field added later without bounds (or a duration that bypasses `Duration`) fails here.
"""

from __future__ import annotations

import copy
import typing
from datetime import timedelta
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from pydantic import BaseModel

from nomad_triton.spec import DeploymentSpec, SpecError, load_spec, validate_data
from nomad_triton.spec.messages import _alternatives, show_value
from nomad_triton.spec.models import DockerDriver, RawExecDriver

LIBRARY_WORDS = (
    "Input should",
    "Value error",
    "Field required",
    "pydantic",
    "errors.pydantic.dev",
    "Traceback",
)

BASE: dict[str, Any] = {
    "name": "svc",
    "driver": {"type": "raw_exec", "command": "/bin/true"},
    "model_repository": {"path": "/srv/models", "models": ["mlp"]},
}
DOCKER_BASE: dict[str, Any] = {**BASE, "driver": {"type": "docker", "image": "triton:1"}}


def _plain_alternatives(annotation: Any) -> list[Any]:
    return [s.annotation for s in _alternatives(annotation)]


def walk_fields(
    model: type[BaseModel], prefix: tuple[str | int, ...] = ()
) -> list[tuple[tuple[str | int, ...], Any]]:
    """(path, FieldInfo) for every leaf field reachable from `model`: union variants, and the
    items of lists and tables of models (path segment 0 / "*"), included."""
    out = []
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        found = False
        for alt in _plain_alternatives(field.annotation):
            origin, args = typing.get_origin(alt), typing.get_args(alt)
            if isinstance(alt, type) and issubclass(alt, BaseModel):
                out.extend(walk_fields(alt, path))
                found = True
            elif origin in (list, dict):
                item, seg = (args[0], 0) if origin is list else (args[1], "*")
                for sub in _plain_alternatives(item):
                    if isinstance(sub, type) and issubclass(sub, BaseModel):
                        out.extend(walk_fields(sub, (*path, seg)))
                        found = True
        if not found:
            out.append((path, field))
    return out


FIELDS = walk_fields(DeploymentSpec)
NUMERIC_ALL = [
    (path, field)
    for path, field in FIELDS
    if any(a in (int, float) for a in _plain_alternatives(field.annotation))
]
# fields reachable without a list item (the behavioural tests build the document by path)
NUMERIC = [(p, f) for p, f in NUMERIC_ALL if all(isinstance(seg, str) and seg != "*" for seg in p)]
DURATIONS = [
    (p, f)
    for p, f in FIELDS
    if timedelta in _plain_alternatives(f.annotation)
    and all(isinstance(seg, str) and seg != "*" for seg in p)
]


def _id(path: tuple[str | int, ...]) -> str:
    return ".".join(map(str, path))


def base_for(path: tuple[str, ...]) -> dict[str, Any]:
    if (
        path[0] == "driver"
        and path[1] in DockerDriver.model_fields
        and path[1] not in RawExecDriver.model_fields
    ):
        return copy.deepcopy(DOCKER_BASE)
    if path[:3] == ("scaling", "policy", "prometheus"):
        # the section's required sibling, so the error is the field's own
        return {**copy.deepcopy(BASE), "scaling": {"policy": {
            "source": "prometheus", "prometheus": {"address": "http://127.0.0.1:9090"}}}}
    return copy.deepcopy(BASE)


def with_value(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data = base_for(path)
    node = data
    for seg in path[:-1]:
        node = node.setdefault(seg, {})
    node[path[-1]] = value
    return data


def error_for(path: tuple[str, ...], value: Any) -> SpecError:
    with pytest.raises(SpecError) as info:
        validate_data(with_value(path, value), "spec.toml")
    return info.value


def test_the_walk_finds_the_fields_we_know() -> None:
    names = {".".join(p) for p, _ in NUMERIC}
    for known in (
        "count",
        "priority",
        "resources.memory",
        "ports.http.static",
        "gpus.count",
        "scaling.max",
        "scaling.policy.target_utilization",
        "driver.shm_size_mb",
    ):
        assert known in names
    assert {".".join(p) for p, _ in DURATIONS} >= {
        "rollout.stagger",
        "health.interval",
        "scaling.policy.drain",
    }
    assert len(NUMERIC) >= 25 and len(DURATIONS) >= 15


@pytest.mark.parametrize(("path", "field"), NUMERIC_ALL, ids=[_id(p) for p, _ in NUMERIC_ALL])
def test_every_numeric_field_declares_both_bounds(path: tuple[str, ...], field: Any) -> None:
    meta = field.metadata
    assert any(isinstance(m, annotated_types.Ge | annotated_types.Gt) for m in meta), (
        f"{path}: no lower bound"
    )
    assert any(isinstance(m, annotated_types.Le | annotated_types.Lt) for m in meta), (
        f"{path}: no upper bound"
    )


@pytest.mark.parametrize(("path", "field"), NUMERIC, ids=[".".join(p) for p, _ in NUMERIC])
@pytest.mark.parametrize("value", [10**20, -(10**20), 1e20, float("inf"), float("nan")])
def test_every_numeric_field_rejects_far_out_values(path: tuple[str, ...], field: Any, value: Any) -> None:
    err = error_for(path, value)
    assert err.field == ".".join(path), err.line()
    assert err.message.startswith("expected "), err.line()
    assert f"got {show_value(value)}" in err.message, err.line()
    assert not any(w in err.line() for w in LIBRARY_WORDS), err.line()


@pytest.mark.parametrize(("path", "field"), NUMERIC, ids=[".".join(p) for p, _ in NUMERIC])
def test_every_numeric_field_refuses_numbers_written_as_text_and_booleans(
    path: tuple[str, ...], field: Any
) -> None:
    default = field.default if isinstance(field.default, int | float) else 1
    for value in (str(default), True):
        err = error_for(path, value)
        assert err.field == ".".join(path) and err.message.startswith("expected "), err.line()
        assert f"got {show_value(value)}" in err.message, err.line()


def test_integral_floats_are_not_counts() -> None:
    assert error_for(("count",), 2.0).message == "expected a whole number from 0 to 10000, got 2.0"


def test_float_fields_take_whole_numbers() -> None:
    spec = validate_data(with_value(("scaling", "policy", "target_utilization"), 1), "spec.toml")
    assert spec.scaling.policy.target_utilization == 1


@pytest.mark.parametrize(("path", "field"), DURATIONS, ids=[".".join(p) for p, _ in DURATIONS])
def test_every_duration_is_strict_and_bounded(path: tuple[str, ...], field: Any) -> None:
    for value, fragment in (
        (" 5s", "surrounding whitespace"),
        ("5s ", "surrounding whitespace"),
        ("8761h", "longer than the maximum of 8760h"),
        (5, "expected a duration string"),
        ("", "empty duration"),
    ):
        err = error_for(path, value)
        assert err.field == ".".join(path) and fragment in err.message, err.line()
        assert not any(w in err.line() for w in LIBRARY_WORDS), err.line()


@pytest.mark.parametrize(
    ("path", "value", "line"),
    [
        (
            ("ports", "http", "static"),
            "8000",
            'ports.http.static: expected a whole number from 1 to 65535, got "8000"',
        ),
        (("name",), 123, "name: expected text, got 123"),
        (("rollout", "auto_revert"), "yes", 'rollout.auto_revert: expected true or false, got "yes"'),
        (("rollout", "auto_revert"), 1, "rollout.auto_revert: expected true or false, got 1"),
        (("datacenters",), "dc1", 'datacenters: expected a non-empty list of text, got "dc1"'),
        (("resources",), 5, "resources: expected a table, got 5"),
        (("restart", "mode"), "retry", "restart.mode: expected one of 'fail', 'delay', got \"retry\""),
        (("driver", "type"), "podman", "driver.type: expected one of 'docker', 'raw_exec', got \"podman\""),
        (("name",), None, "name: expected text, got null"),
        (
            ("scaling", "policy", "latency_slo_ms"),
            0,
            "latency_slo_ms: expected a number above 0 and at most 3.6e+06, got 0",
        ),
    ],
)
def test_types_are_strict_and_the_line_says_what_was_given_and_expected(
    path: tuple[str, ...], value: Any, line: str
) -> None:
    err = error_for(path, value)
    assert err.line().endswith(line), err.line()
    assert err.line().startswith("spec.toml: "), err.line()


def test_missing_required_fields_say_what_is_expected() -> None:
    data = copy.deepcopy(BASE)
    del data["name"]
    with pytest.raises(SpecError) as info:
        validate_data(data, "spec.toml")
    assert info.value.line() == "spec.toml: name: missing; expected text"


def test_long_values_are_truncated_and_secrets_masked() -> None:
    long = "x" * 500
    err = error_for(("priority",), long)
    assert len(err.line()) < 200 and "…" in err.message
    secret = error_for(("env",), {"HF_TOKEN": ["s3cr3t-value"]})
    assert secret.field == "env.HF_TOKEN" and "s3cr3t" not in secret.line() and "(hidden)" in secret.line()
    url = error_for(("model_repository", "artifact"), "ftp//user:hunter2@host/m.tgz?sig=abc")
    assert "hunter2" not in url.line() and "sig=abc" not in url.line(), url.line()


def test_show_value_masks_url_credentials_and_queries() -> None:
    assert show_value("https://bob:pw@example.com/m.tgz?token=abc") == '"https://***@example.com/m.tgz?***"'
    assert show_value("x", ("env", "DB_PASSWORD")) == "(hidden)"


# ---------------------------------------------------------------- --set


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    repo = tmp_path / "models" / "mlp"
    repo.mkdir(parents=True)
    path = tmp_path / "spec.toml"
    path.write_text(
        'name = "svc"\n[driver]\ntype = "raw_exec"\ncommand = "/bin/true"\n'
        '[model_repository]\npath = "models"\nmodels = ["mlp"]\n'
    )
    return path


def set_error(spec_file: Path, *items: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(spec_file, sets=list(items))
    return info.value


@pytest.mark.parametrize(
    ("item", "line"),
    [
        (
            "count.sub=1",
            "--set count.sub=1: count.sub: count is a whole number from 0 to 10000 and has no field 'sub'",
        ),
        (
            "model_repository.models.x=y",
            "--set model_repository.models.x=y: model_repository.models.x: "
            "models is a list and 'x' is not an index (use 0..1; 1 appends)",
        ),
        (
            "model_repository.models.5=y",
            "--set model_repository.models.5=y: model_repository.models.5: "
            "models is a list of 1 and 5 is past its end (use 0..1; 1 appends)",
        ),
        ("name.first=a", "--set name.first=a: name.first: name is text and has no field 'first'"),
        ("env.A.B=1", "--set env.A.B=1: env.A.B: A is text and has no field 'B'"),
        (
            "model_repository.models.0.x=1",
            "--set model_repository.models.0.x=1: model_repository.models.0.x: models.0 is text and has no field 'x'",
        ),
        (
            "count=abc",
            '--set count=abc: count: "abc" is not a TOML value (numbers, true/false, [lists], "quoted text"); '
            "expected a whole number from 0 to 10000",
        ),
        (
            "rollout.auto_revert=yes",
            '--set rollout.auto_revert=yes: rollout.auto_revert: "yes" is not a TOML value '
            '(numbers, true/false, [lists], "quoted text"); expected true or false',
        ),
        (
            'ports.http.static="8000"',
            '--set ports.http.static="8000": ports.http.static: '
            'expected a whole number from 1 to 65535, got "8000"',
        ),
        (
            'rollout.stagger=" 5s"',
            "--set rollout.stagger=\" 5s\": rollout.stagger: duration ' 5s' has surrounding whitespace",
        ),
        ("env.API_TOKEN=[1]", "--set env.API_TOKEN=(hidden): env.API_TOKEN: expected text, got (hidden)"),
    ],
)
def test_set_errors_name_the_flag_and_the_path(spec_file: Path, item: str, line: str) -> None:
    assert set_error(spec_file, item).line() == line


def test_the_set_flag_echoed_back_is_truncated_and_masked(spec_file: Path) -> None:
    long = set_error(spec_file, "priority=" + "9" * 300)
    assert long.source == "--set priority=" + "9" * 39 + "…", long.line()
    url = set_error(spec_file, "count=https://bob:hunter2@host/m.tgz")
    assert url.source == "--set count=https://***@host/m.tgz" and "hunter2" not in url.line(), url.line()


def test_set_count_sub_when_count_was_written_in_the_file(spec_file: Path) -> None:
    spec_file.write_text("count = 2\n" + spec_file.read_text())
    assert set_error(spec_file, "count.sub=1").message == "count is a number and has no field 'sub'"


def test_bare_words_are_text_where_text_belongs(spec_file: Path) -> None:
    spec = load_spec(
        spec_file,
        sets=[
            "rollout.stagger=45s",
            "rollout.health_check=task_states",
            "driver.command=/bin/echo",
            "env.X=y",
        ],
    )
    assert spec.rollout.stagger == timedelta(seconds=45) and spec.rollout.health_check == "task_states"
    assert spec.driver.command == "/bin/echo" and spec.env == {"X": "y"}


def test_set_into_an_absent_list_field_makes_a_list(spec_file: Path) -> None:
    assert load_spec(spec_file, sets=["datacenters.0=dc1", "datacenters.1=dc2"]).datacenters == ["dc1", "dc2"]


# ---------------------------------------------------------------- files that are not text


@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x01binary", b'name = "a\x00b"\n', bytes(range(256))])
def test_binary_files_are_not_text_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "spec.toml"
    path.write_bytes(content)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.line().startswith(f"{path}: not a text file"), info.value.line()
    assert "codec" not in info.value.line()


# ---------------------------------------------------------------- a raw_exec job's repository on this host


def test_raw_exec_repository_must_exist(spec_file: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec_file, sets=["model_repository.path=/nonexistent/repo"], check_repository=True)
    assert info.value.line() == (
        "--set model_repository.path=/nonexistent/repo: model_repository.path: "
        "/nonexistent/repo does not exist; expected the model repository folder"
    )
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpecError) as info:
        load_spec(spec_file, sets=[f"model_repository.path={tmp_path / 'file'}"], check_repository=True)
    assert "is not a folder" in info.value.message


def test_raw_exec_repository_must_hold_every_model(spec_file: Path, tmp_path: Path) -> None:
    spec_file.write_text(spec_file.read_text().replace('models = ["mlp"]', 'models = ["mlp", "bert"]'))
    with pytest.raises(SpecError) as info:
        load_spec(spec_file, check_repository=True)
    repo = tmp_path / "models"
    assert info.value.line() == (
        f"{spec_file}: model_repository.models.1: model 'bert' is not in {repo} (expected a folder {repo / 'bert'})"
    )
    assert load_spec(spec_file).model_repository.models == ["mlp", "bert"]  # render/plan do not look


def test_docker_paths_live_in_the_image_and_are_not_checked(spec_file: Path) -> None:
    spec = load_spec(
        spec_file,
        sets=['driver={type = "docker", image = "triton:1"}', "model_repository.path=/models"],
        check_repository=True,
    )
    assert spec.driver.type == "docker"


def test_every_type_name_in_the_schema_is_described() -> None:
    """No field falls through to a Python type name in `expected ...` (e.g. 'timedelta', 'Union')."""
    from nomad_triton.spec.messages import expected, slots_at

    for path, _ in FIELDS:
        text = expected(slots_at(DeploymentSpec, list(path)))
        assert not any(t in text for t in ("typing", "Union", "timedelta", "NoneType", "<class")), (
            path,
            text,
        )
        assert typing.get_origin(text) is None


def test_an_error_type_we_do_not_know_still_gets_our_words() -> None:
    from nomad_triton.spec.messages import translate

    err = {"type": "some_future_type", "loc": ("resources", "cpu"), "msg": "Input should be shiny", "input": 7}
    assert translate(DeploymentSpec, err) == "invalid value 7; expected a whole number from 1 to 1000000"


def test_cross_field_errors_show_both_values() -> None:
    err = error_for(("scaling",), {"min": 5, "max": 2})
    assert err.line() == "spec.toml: scaling.min: min 5 must be <= max 2"
    err = error_for(("health",), {"interval": "1s", "timeout": "2s"})
    assert err.line() == "spec.toml: health.timeout: timeout 2s must not exceed interval 1s"
