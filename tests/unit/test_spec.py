"""DeploymentSpec validation: every section's fields, defaults and cross-field rules."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from nomad_triton.spec import DeploymentSpec, ScalingPolicySpec, SpecError, format_duration, parse_duration
from nomad_triton.spec.loader import validate_data
from nomad_triton.spec.models import ScalingSpec

BASE: dict[str, Any] = {
    "name": "triton-cpu",
    "driver": {"type": "raw_exec", "command": "/usr/bin/nomad-triton"},
    "model_repository": {"path": "/srv/models", "models": ["mlp"]},
}
DOCKER = {"type": "docker", "image": "nvcr.io/x/triton:24.08"}


def with_(changes: dict[str, Any]) -> dict[str, Any]:
    """BASE with dotted-path changes applied (a value of ... deletes the key)."""
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        if value is ...:
            node.pop(last, None)
        else:
            node[last] = value
    return data


def error_of(changes: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as info:
        validate_data(with_(changes), "spec.toml")
    return info.value


def test_minimal_spec_gets_nomad_like_defaults() -> None:
    spec = validate_data(with_({}), "spec.toml")
    assert spec.namespace == "default" and spec.region == "global" and spec.datacenters == ["*"]
    assert spec.node_pool == "default" and spec.count == 1 and spec.group == "triton"
    assert spec.rollout.max_parallel == 1 and spec.rollout.auto_revert is True and spec.rollout.canary == 0
    assert spec.rollout.min_healthy_time == timedelta(seconds=10)
    assert spec.rollout.healthy_deadline == timedelta(minutes=5)
    assert spec.rollout.progress_deadline == timedelta(minutes=10)
    assert spec.health.ready_path == "/v2/health/ready" and spec.health.per_model is True
    assert spec.gpus.count == 0 and spec.scaling.enabled is False
    assert spec.service_name == "triton-cpu"
    assert spec.model_repository.source == "path" and spec.repository_path == "/srv/models"


def test_scaling_policy_defaults_are_usable_by_the_autoscaler() -> None:
    policy = ScalingPolicySpec()
    assert policy.target_queue_compute_ratio == 1.0
    assert policy.cooldown_up < policy.cooldown_down  # scale up fast, down slowly
    assert policy.max_step_up >= 1 and policy.max_step_down >= 1
    assert policy.evaluation_interval.total_seconds() <= 1  # the issue: default interval <= 1 s


def test_scaling_spec_maps_onto_the_autoscaler_config() -> None:
    # The real autoscaler config class: every kwarg must exist there and pass its own checks.
    from nomad_triton.autoscale.policy import ScalingPolicyConfig

    spec = validate_data(
        with_(
            {
                "count": 2,
                "scaling": {
                    "enabled": True,
                    "min": 2,
                    "max": 9,
                    "policy": {"cooldown_down": "90s", "latency_slo_ms": 150, "tolerance": 0.2},
                },
            }
        ),
        "s.toml",
    )
    cfg = ScalingPolicyConfig(**spec.scaling.policy_config_kwargs())
    assert (cfg.min_count, cfg.max_count) == (2, 9)
    assert cfg.down_cooldown_s == 90.0 and cfg.up_cooldown_s == 3.0
    assert cfg.latency_slo_ms == 150 and cfg.band == 0.2 and cfg.target_saturation == 1.0
    assert cfg.interval_s == 1.0 and cfg.window_s == 3.0


def test_spec_policy_defaults_are_the_autoscalers_measured_defaults() -> None:
    # The spec and the policy must not drift apart: P3 measures ScalingPolicyConfig's defaults,
    # so a spec that leaves the policy alone must get exactly those.
    import dataclasses

    from nomad_triton.autoscale.policy import ScalingPolicyConfig

    from_spec = ScalingPolicyConfig(**ScalingSpec(max=10).policy_config_kwargs())
    defaults = ScalingPolicyConfig()
    for f in dataclasses.fields(ScalingPolicyConfig):
        assert getattr(from_spec, f.name) == getattr(defaults, f.name), f.name


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"name": "has space"}, "name", "letters, digits"),
        ({"name": ""}, "name", "letters, digits"),
        ({"name": "x" * 129}, "name", "1-128"),
        ({"name": "under_score"}, "name", "service name"),
        ({"name": ...}, "name", "missing; expected"),
        ({"namespace": "a b"}, "namespace", "expected text matching"),
        ({"region": ""}, "region", "must not be empty"),
        ({"datacenters": []}, "datacenters", "must not be empty"),
        ({"datacenters": ["dc 1"]}, "datacenters", "invalid datacenter"),
        ({"node_pool": "gpu pool"}, "node_pool", "expected text matching"),
        ({"priority": 0}, "priority", "from 1 to"),
        ({"priority": 101}, "priority", "to 100, got 101"),
        ({"count": -1}, "count", "from 0 to"),
        ({"count": "two"}, "count", 'expected a whole number from 0 to 10000, got "two"'),
        ({"group": "a/b"}, "group", "expected text matching"),
        ({"task": ""}, "task", "expected text matching"),
        ({"driver": ...}, "driver", "missing; expected"),
        ({"driver": {"type": "exec"}}, "driver.type", "one of 'docker', 'raw_exec'"),
        ({"driver": {"command": "x"}}, "driver.type", "missing; expected"),
        ({"driver": {"type": "docker"}}, "driver.image", "missing; expected"),
        ({"driver": {**DOCKER, "shm_size_mb": 0}}, "driver.shm_size_mb", "from 1 to"),
        (
            {"driver": {**DOCKER, "network_mode": "overlay"}},
            "driver.network_mode",
            "one of 'host', 'bridge', got \"overlay\"",
        ),
        ({"driver": {**DOCKER, "ulimits": {"mem lock": "1"}}}, "driver.ulimits", "invalid ulimit name"),
        ({"driver": {"type": "raw_exec", "command": ""}}, "driver.command", "must not be empty"),
        (
            {"driver": {"type": "raw_exec", "args": "serve"}},
            "driver.args",
            'expected a list of text, got "serve"',
        ),
        ({"model_repository.models": []}, "model_repository.models", "must not be empty"),
        ({"model_repository.models": ["a", "a"]}, "model_repository.models", "unique"),
        ({"model_repository.models": ["../etc"]}, "model_repository.models", "invalid model name"),
        ({"model_repository.path": None}, "model_repository.path", "exactly one"),
        ({"model_repository.artifact": "https://x/m.tgz"}, "model_repository.path", "got path, artifact"),
        (
            {"model_repository.path": ..., "model_repository.artifact": "not a url"},
            "model_repository.artifact",
            "URL",
        ),
        (
            {"model_repository.path": ..., "model_repository.host_volume": "m"},
            "model_repository.host_volume",
            "docker",
        ),
        ({"ports": {"http": {"static": 70000}}}, "ports.http.static", "to 65535, got 70000"),
        ({"ports": {"grpc": {"to": 0}}}, "ports.grpc.to", "from 1 to"),
        (
            {"ports": {"http": {"static": 8000}, "metrics": {"static": 8000}}},
            "ports.metrics.static",
            "differ",
        ),
        ({"resources": {"cpu": 0}}, "resources.cpu", "from 1 to"),
        ({"resources": {"memory": 5}}, "resources.memory", "from 10 to"),
        ({"resources": {"memory": 2048, "memory_max": 1024}}, "resources.memory_max", ">= memory"),
        ({"gpus": {"count": -1}}, "gpus.count", "from 0 to"),
        ({"gpus": {"count": 1, "min_memory": "lots"}}, "gpus.min_memory", "invalid size"),
        ({"gpus": {"count": 1, "model": "A100("}}, "gpus.model", "regexp"),
        (
            {"gpus": {"count": 1, "preferred_model": "H100", "preferred_weight": 0}},
            "gpus.preferred_weight",
            "not be 0",
        ),
        (
            {"gpus": {"count": 1, "preferred_weight": 101}},
            "gpus.preferred_weight",
            "to 100, got 101",
        ),
        ({"gpus": {"count": 0, "model": "A100"}}, "gpus.count", "need count >= 1"),
        ({"gpus": {"count": 1, "device": "nvidia gpu"}}, "gpus.device", "expected text matching"),
        ({"rollout": {"canary": -1}}, "rollout.canary", "from 0 to"),
        ({"rollout": {"max_parallel": -1}}, "rollout.max_parallel", "from 0 to"),
        ({"rollout": {"auto_promote": True}}, "rollout.auto_promote", "canary > 0"),
        ({"rollout": {"min_healthy_time": "10"}}, "rollout.min_healthy_time", "invalid duration"),
        ({"rollout": {"min_healthy_time": 10}}, "rollout.min_healthy_time", "duration string"),
        ({"rollout": {"healthy_deadline": "-5m"}}, "rollout.healthy_deadline", "invalid duration"),
        (
            {"rollout": {"min_healthy_time": "6m"}},
            "rollout.min_healthy_time",
            "shorter than healthy_deadline",
        ),
        (
            {"rollout": {"healthy_deadline": "10m"}},
            "rollout.healthy_deadline",
            "shorter than progress_deadline",
        ),
        ({"rollout": {"health_check": "http"}}, "rollout.health_check", "'checks'"),
        ({"health": {"ready_path": "v2/health"}}, "health.ready_path", "expected text matching"),
        ({"health": {"interval": "1s", "timeout": "2s"}}, "health.timeout", "not exceed interval"),
        ({"health": {"interval": "0s"}}, "health.interval", "positive"),
        ({"health": {"service_name": "bad_name"}}, "health.service_name", "RFC 1123"),
        ({"restart": {"attempts": -1}}, "restart.attempts", "from 0 to"),
        ({"restart": {"mode": "retry"}}, "restart.mode", "one of 'fail', 'delay'"),
        ({"reschedule": {"delay_function": "linear"}}, "reschedule.delay_function", "'constant'"),
        ({"scaling": {"min": 3, "max": 2}}, "scaling.min", "<= max"),
        ({"scaling": {"max": 0}}, "scaling.max", "from 1 to"),
        ({"scaling": {"enabled": True, "min": 2, "max": 4}}, "count", "within scaling.min..scaling.max"),
        (
            {"scaling": {"policy": {"target_queue_compute_ratio": 0}}},
            "scaling.policy.target_queue_compute_ratio",
            "above 0",
        ),
        (
            {"scaling": {"policy": {"target_queue_compute_ratio": None}}},
            "scaling.policy.target_queue_compute_ratio",
            "expected a number above 0 and at most 1000, got null",
        ),
        (
            {"scaling": {"policy": {"target_utilization": 1.5}}},
            "scaling.policy.target_utilization",
            "at most 1, got 1.5",
        ),
        ({"scaling": {"policy": {"fast_factor": 1}}}, "scaling.policy.fast_factor", "above 1"),
        ({"scaling": {"policy": {"window": "0s"}}}, "scaling.policy.window", "positive"),
        (
            {"scaling": {"policy": {"instances_per_replica": 0}}},
            "scaling.policy.instances_per_replica",
            "from 1 to",
        ),
        ({"scaling": {"policy": {"tolerance": 1}}}, "scaling.policy.tolerance", "below 1"),
        (
            {"scaling": {"policy": {"max_step_up": 0}}},
            "scaling.policy.max_step_up",
            "from 1 to",
        ),
        (
            {"scaling": {"policy": {"cooldown_down": "soon"}}},
            "scaling.policy.cooldown_down",
            "invalid duration",
        ),
        (
            {"scaling": {"policy": {"evaluation_interval": "0s"}}},
            "scaling.policy.evaluation_interval",
            "positive",
        ),
        ({"env": {"1BAD": "x"}}, "env", "invalid environment variable name"),
        ({"env": {"NOMAD_PORT_http": "1"}}, "env", "set by Nomad"),
        ({"env": {"A": [1]}}, "env.A", "expected text, got [1]"),
        ({"meta": {"a b": "x"}}, "meta", "invalid meta key"),
        ({"rollout": {"canaries": 1}}, "rollout.canaries", "did you mean 'canary'"),
        ({"gpu": {"count": 1}}, "gpu", "did you mean 'gpus'"),
        ({"driver": {"type": "raw_exec", "comand": "x"}}, "driver.comand", "did you mean 'command'"),
        ({"scaling": {"policy": {"cooldown": "1m"}}}, "scaling.policy.cooldown", "unknown key"),
    ],
)
def test_invalid_field_is_reported_with_its_path(changes: dict[str, Any], field: str, fragment: str) -> None:
    err = error_of(changes)
    assert err.field == field, err.line()
    assert fragment in err.message, err.line()
    assert err.line().startswith(f"spec.toml: {field}: ")
    assert "\n" not in err.line()


def test_docker_gpu_spec_is_accepted() -> None:
    spec = validate_data(
        with_(
            {
                "driver": {**DOCKER, "network_mode": "bridge"},
                "model_repository": {"host_volume": "models", "models": ["a", "b"]},
                "gpus": {"count": 2, "min_memory": "16 GiB", "model": "A100", "preferred_model": "H100"},
                "rollout": {"canary": 1, "auto_promote": True},
                "scaling": {"enabled": True, "min": 1, "max": 4},
            }
        ),
        "spec.toml",
    )
    assert spec.driver.type == "docker" and spec.driver.shm_size_mb == 1024
    assert spec.repository_path == "/models"
    assert spec.gpus.count == 2 and spec.rollout.auto_promote


def test_progress_deadline_zero_disables_the_cross_check() -> None:
    spec = validate_data(with_({"rollout": {"progress_deadline": "0", "healthy_deadline": "1h"}}), "s.toml")
    assert spec.rollout.progress_deadline == timedelta(0)


def test_multiple_errors_are_counted_in_one_line() -> None:
    err = error_of({"count": -1, "priority": 0})
    assert "(and 1 more error)" in err.line()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("1.5s", 1.5), ("0", 0), ("250us", 0.00025)],
)
def test_go_durations_parse_and_format_round_trip(text: str, seconds: float) -> None:
    value = parse_duration(text)
    assert value.total_seconds() == pytest.approx(seconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("bad", ["", "10", "10x", "s", "-1s", "1h-5m", True, 5])
def test_bad_durations_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_json_dump_writes_durations_back_in_go_form() -> None:
    dumped = DeploymentSpec.model_validate(with_({"rollout": {"min_healthy_time": "90s"}})).model_dump(
        mode="json"
    )
    assert dumped["rollout"]["min_healthy_time"] == "1m30s"
    assert DeploymentSpec.model_validate(dumped).rollout.min_healthy_time == timedelta(seconds=90)
