"""Deployment spec: models (pydantic), Go durations, and the TOML/YAML/JSON loader with overrides.

Public surface: `from nomad_triton.spec import DeploymentSpec, ScalingPolicySpec, load_spec, SpecError`.
"""

from nomad_triton.spec.durations import Duration, format_duration, parse_duration
from nomad_triton.spec.loader import (
    SpecError,
    apply_set,
    deep_merge,
    load_spec,
    load_spec_data,
    validate_data,
)
from nomad_triton.spec.models import (
    DeploymentSpec,
    DockerDriver,
    GpuSpec,
    HealthSpec,
    ModelRepositorySpec,
    PortSpec,
    PortsSpec,
    RawExecDriver,
    RescheduleSpec,
    ResourcesSpec,
    RestartSpec,
    RolloutSpec,
    ScalingPolicySpec,
    ScalingSpec,
)

__all__ = [
    "DeploymentSpec",
    "DockerDriver",
    "Duration",
    "GpuSpec",
    "HealthSpec",
    "ModelRepositorySpec",
    "PortSpec",
    "PortsSpec",
    "RawExecDriver",
    "RescheduleSpec",
    "ResourcesSpec",
    "RestartSpec",
    "RolloutSpec",
    "ScalingPolicySpec",
    "ScalingSpec",
    "SpecError",
    "apply_set",
    "deep_merge",
    "format_duration",
    "load_spec",
    "load_spec_data",
    "parse_duration",
    "validate_data",
]
