"""The deployment spec: what a user writes in jobs/<name>.toml, validated before anything is rendered.

Why pydantic with `extra="forbid"` everywhere: a misspelt key (`canaries` for `canary`) must be an
error naming the key, never a silently ignored setting that surfaces as a bad rollout in production.
Defaults follow Nomad's own where Nomad has one, so an empty section means "what Nomad would do".
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nomad_triton.spec.durations import Duration, format_duration
from nomad_triton.spec.limits import (
    MAX_ATTEMPTS,
    MAX_COUNT,
    MAX_CPU_MHZ,
    MAX_FAST_FACTOR,
    MAX_GPUS,
    MAX_INSTANCES,
    MAX_LATENCY_MS,
    MAX_MEMORY_MB,
    MAX_PENDING,
    MAX_RATIO,
    MIN_MEMORY_MB,
)
from nomad_triton.spec.messages import translate
from nomad_triton.spec.prometheus_source import PrometheusSourceSpec

# Nomad rejects job IDs with spaces or NUL characters; we also keep them to a URL- and
# variable-path-safe alphabet because the ID ends up in API paths and lock variable paths.
JOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Nomad's service name rule (RFC 1123 label, case-insensitive).
SERVICE_NAME_RE = re.compile(r"^(?i:[a-z0-9]|[a-z0-9][a-z0-9-]{0,61}[a-z0-9])$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
META_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)\s*$")


class FieldError(ValueError):
    """A cross-field error that knows which field (dotted, relative to its model) it is about.

    Why: pydantic reports model-level validator errors at the model's own location; the loader
    appends `field` so users read `rollout.auto_promote: ...` rather than just `rollout: ...`.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Strict(BaseModel):
    """Base for every spec section: unknown keys are errors, assignments are re-validated.

    `strict`: a value of the wrong type is an error, never coerced (`static = "8000"` is not a
    port, `count = 2.0` is not a count); `allow_inf_nan=False`: TOML's `inf`/`nan` are no numbers.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


class DockerDriver(_Strict):
    """Run Triton from a container image (real GPU pools)."""

    type: Literal["docker"] = "docker"
    image: str = Field(min_length=1, description="Image reference, e.g. nvcr.io/org/triton:24.08.")
    args: list[str] | None = Field(
        None, description="Container args; default: serve --models <model repository path>."
    )
    shm_size_mb: int | None = Field(
        1024,
        ge=1,
        le=MAX_MEMORY_MB,
        description="/dev/shm size in MiB; Triton's python backend needs more than Docker's 64 MiB.",
    )
    ulimits: dict[str, str] = Field(
        default_factory=lambda: {"memlock": "-1", "stack": "67108864"},
        description="Docker ulimits (name -> 'soft[:hard]'), NVIDIA's recommended values by default.",
    )
    network_mode: Literal["host", "bridge"] = Field(
        "host", description="bridge maps the ports to Triton's 8000/8001/8002 inside the container."
    )
    force_pull: bool = False

    @field_validator("ulimits")
    @classmethod
    def _ulimit_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not IDENT_RE.match(name):
                raise ValueError(f"invalid ulimit name {name!r}")
        return value


class RawExecDriver(_Strict):
    """Run a local command (devcluster and bare-metal hosts); the process gets NOMAD_PORT_* in its env."""

    type: Literal["raw_exec"] = "raw_exec"
    command: str = Field(
        "nomad-triton", min_length=1, description="Executable (absolute or on the client's PATH)."
    )
    args: list[str] | None = Field(
        None, description="Arguments; default: serve --models <model repository path>."
    )


Driver = Annotated[DockerDriver | RawExecDriver, Field(discriminator="type")]


class ModelRepositorySpec(_Strict):
    """Where Triton finds its model repository: exactly one source, plus the models to serve."""

    path: str | None = Field(
        None,
        description="A path already present in the image (docker) or on the host (raw_exec). "
        "For raw_exec a relative path is resolved against the spec file's folder.",
    )
    host_volume: str | None = Field(None, description="Name of a Nomad host volume holding the repository.")
    artifact: str | None = Field(
        None,
        description="URL (go-getter) downloaded into the task's local/models and unpacked there: "
        "https://host/models.tar.gz, s3::https://s3.amazonaws.com/bucket/models.tar.gz or "
        "gcs::https://www.googleapis.com/storage/v1/bucket/models.tar.gz.",
    )
    checksum: str | None = Field(
        None, description="Checksum of the artifact, verified before unpacking: 'sha256:<64 hex digits>' "
        "(md5, sha1, sha512 also accepted)."
    )
    mount_path: str = Field("/models", description="Where a host volume is mounted inside the task.")
    models: list[str] = Field(min_length=1, description="Model names to load and health-check.")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ModelRepositorySpec:
        given = [n for n in ("path", "host_volume", "artifact") if getattr(self, n)]
        if len(given) != 1:
            raise FieldError(
                "path",
                "set exactly one of path, host_volume, artifact"
                + (f" (got {', '.join(given)})" if given else ""),
            )
        return self

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not MODEL_NAME_RE.match(name):
                raise ValueError(f"invalid model name {name!r}")
        if len(set(value)) != len(value):
            raise ValueError("model names must be unique")
        return value

    @field_validator("artifact")
    @classmethod
    def _artifact_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[a-z][a-z0-9+.-]*::|^[a-z][a-z0-9+.-]*://", value):
            raise ValueError("artifact must be a URL such as https://host/models.tar.gz or s3::https://...")
        return value

    @field_validator("checksum")
    @classmethod
    def _checksum_form(cls, value: str | None) -> str | None:
        if value is None:
            return value
        lengths = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}
        kind, _, digest = value.partition(":")
        if kind not in lengths or not re.fullmatch(rf"[0-9a-f]{{{lengths.get(kind, 0)}}}", digest):
            raise ValueError(f"{value!r} is not 'sha256:<64 hex digits>' (or md5/sha1/sha512 with their lengths)")
        return value

    @model_validator(mode="after")
    def _checksum_needs_artifact(self) -> ModelRepositorySpec:
        if self.checksum and not self.artifact:
            raise FieldError("checksum", "checksum only applies to an artifact source")
        return self

    @property
    def source(self) -> Literal["path", "host_volume", "artifact"]:
        """Which single source is set (validated)."""
        if self.path:
            return "path"
        return "host_volume" if self.host_volume else "artifact"

    def task_path(self, driver_type: str) -> str:
        """The repository path as the running task sees it.

        An artifact lands in the task's local/ dir: the raw_exec working directory is the task
        dir, while docker mounts it at /local (the image's WORKDIR is unknown to us).
        """
        if self.path:
            return self.path
        if self.host_volume:
            return self.mount_path
        return "/local/models" if driver_type == "docker" else "local/models"


class PortSpec(_Strict):
    """One port: dynamic unless `static` is set; `to` is the container port in bridge mode."""

    static: int | None = Field(None, ge=1, le=65535)
    to: int | None = Field(None, ge=1, le=65535)


class PortsSpec(_Strict):
    """Triton's three ports; labels are fixed because `serve` reads NOMAD_PORT_http/grpc/metrics."""

    http: PortSpec = Field(default_factory=PortSpec)
    grpc: PortSpec = Field(default_factory=PortSpec)
    metrics: PortSpec = Field(default_factory=PortSpec)

    @model_validator(mode="after")
    def _distinct_static(self) -> PortsSpec:
        statics = [p.static for p in (self.http, self.grpc, self.metrics) if p.static]
        if len(statics) != len(set(statics)):
            raise FieldError("metrics.static", "static ports must differ")
        return self


class ResourcesSpec(_Strict):
    """CPU in MHz and memory in MB, as Nomad's resources block takes them."""

    cpu: int = Field(1000, ge=1, le=MAX_CPU_MHZ, description="CPU shares in MHz.")
    memory: int = Field(
        2048, ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB, description="Memory in MB (Nomad's minimum is 10)."
    )
    memory_max: int | None = Field(
        None, ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB, description="Oversubscription limit in MB (optional)."
    )

    @model_validator(mode="after")
    def _max_above(self) -> ResourcesSpec:
        if self.memory_max is not None and self.memory_max < self.memory:
            raise FieldError("memory_max", f"memory_max {self.memory_max} must be >= memory {self.memory}")
        return self


def _check_size(value: str | None) -> str | None:
    if value is not None and not SIZE_RE.match(value):
        raise ValueError(f'invalid size {value!r} (use e.g. "16 GiB", "40GB")')
    return value


class GpuSpec(_Strict):
    """GPUs via Nomad's device plugin; count 0 means CPU-only."""

    count: int = Field(0, ge=0, le=MAX_GPUS)
    device: str = Field("nvidia/gpu", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+){0,2}$")
    min_memory: str | None = Field(None, description='Minimum device memory, e.g. "16 GiB".')
    model: str | None = Field(
        None, description='Required device model, matched as a regexp on ${device.model}, e.g. "A100".'
    )
    preferred_model: str | None = Field(None, description="Preferred device model (affinity, regexp).")
    preferred_weight: int = Field(50, ge=-100, le=100, description="Affinity weight (-100..100, not 0).")

    @field_validator("min_memory")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        return _check_size(value)

    @field_validator("preferred_weight")
    @classmethod
    def _nonzero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("weight must not be 0")
        return value

    @field_validator("model", "preferred_model")
    @classmethod
    def _regexp(cls, value: str | None) -> str | None:
        if value is not None:
            if not value.strip():
                raise ValueError("must not be empty")
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regexp: {exc}") from None
        return value

    @model_validator(mode="after")
    def _needs_count(self) -> GpuSpec:
        if self.count == 0 and (self.min_memory or self.model or self.preferred_model):
            raise FieldError("count", "min_memory/model/preferred_model need count >= 1")
        return self


class RolloutSpec(_Strict):
    """Nomad's update block: how new versions replace old allocations."""

    max_parallel: int = Field(1, ge=0, le=MAX_COUNT)
    canary: int = Field(0, ge=0, le=MAX_COUNT)
    auto_promote: bool = False
    auto_revert: bool = True
    health_check: Literal["checks", "task_states", "manual"] = "checks"
    min_healthy_time: Duration = timedelta(seconds=10)
    healthy_deadline: Duration = timedelta(minutes=5)
    progress_deadline: Duration = timedelta(minutes=10)
    stagger: Duration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _cross(self) -> RolloutSpec:
        if self.auto_promote and self.canary == 0:
            raise FieldError("auto_promote", "auto_promote requires canary > 0")
        if self.min_healthy_time >= self.healthy_deadline:
            raise FieldError(
                "min_healthy_time",
                f"min_healthy_time {format_duration(self.min_healthy_time)} must be shorter than "
                f"healthy_deadline {format_duration(self.healthy_deadline)}",
            )
        if self.progress_deadline and self.healthy_deadline >= self.progress_deadline:
            raise FieldError(
                "healthy_deadline",
                f"healthy_deadline {format_duration(self.healthy_deadline)} must be shorter than "
                f"progress_deadline {format_duration(self.progress_deadline)} (or progress_deadline 0)",
            )
        return self


class HealthSpec(_Strict):
    """Service checks: server readiness plus one readiness check per model (Triton is strict-ready)."""

    ready_path: str = Field("/v2/health/ready", pattern=r"^/\S*$")
    per_model: bool = Field(True, description="Add a check on /v2/models/<m>/ready for each model.")
    interval: Duration = timedelta(seconds=10)
    timeout: Duration = timedelta(seconds=2)
    service_name: str | None = Field(
        None, description="Service name; default: the job name (RFC 1123 label)."
    )

    @field_validator("service_name")
    @classmethod
    def _svc(cls, value: str | None) -> str | None:
        if value is not None and not SERVICE_NAME_RE.match(value):
            raise ValueError("must be an RFC 1123 label: letters, digits and dashes, at most 63")
        return value

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> HealthSpec:
        if self.timeout <= timedelta(0) or self.interval <= timedelta(0):
            raise FieldError("interval", "interval and timeout must be positive")
        if self.timeout > self.interval:
            raise FieldError(
                "timeout",
                f"timeout {format_duration(self.timeout)} must not exceed interval {format_duration(self.interval)}",
            )
        return self


class RestartSpec(_Strict):
    """Local restarts before Nomad gives up on an allocation."""

    attempts: int = Field(2, ge=0, le=MAX_ATTEMPTS)
    interval: Duration = timedelta(minutes=30)
    delay: Duration = timedelta(seconds=15)
    mode: Literal["fail", "delay"] = "fail"


class RescheduleSpec(_Strict):
    """Rescheduling onto other nodes after an allocation failed."""

    unlimited: bool = True
    attempts: int = Field(0, ge=0, le=MAX_ATTEMPTS)
    interval: Duration = timedelta(0)
    delay: Duration = timedelta(seconds=30)
    delay_function: Literal["constant", "exponential", "fibonacci"] = "exponential"
    max_delay: Duration = timedelta(hours=1)


class ScalingPolicySpec(_Strict):
    """Inputs to the nomad-triton autoscaler's policy (nomad_triton.autoscale.policy).

    Signals are Triton's own: the queue/compute time ratio (NVIDIA's autoscaling signal, target
    1.0), busy fraction per replica, pending requests per replica and an optional latency SLO.
    Separate cooldowns and step limits per direction because one shared cooldown is the Nomad
    Autoscaler's most cited flaw. `ScalingSpec.policy_config_kwargs()` maps these 1:1 onto the
    autoscaler's `ScalingPolicyConfig`.
    """

    evaluation_interval: Duration = Field(
        timedelta(seconds=1), description="How often the autoscaler decides (react within ~3 s)."
    )
    window: Duration = Field(timedelta(seconds=3), description="Observation window each decision looks at.")
    target_queue_compute_ratio: float = Field(
        1.0, gt=0, le=MAX_RATIO, description="rate(queue_us)/rate(compute_infer_us)."
    )
    target_utilization: float = Field(0.7, gt=0, le=1, description="Busy fraction per replica to size for.")
    target_pending_per_replica: float | None = Field(None, gt=0, le=MAX_PENDING)
    latency_slo_ms: float | None = Field(
        None, gt=0, le=MAX_LATENCY_MS, description="Request latency objective, in ms."
    )
    tolerance: float = Field(0.1, ge=0, lt=1, description="Dead band around the target, as a fraction.")
    cooldown_up: Duration = timedelta(seconds=3)
    cooldown_down: Duration = timedelta(seconds=20)
    scale_down_stabilization: Duration = Field(
        timedelta(seconds=60), description="Scale down only if every decision in this window wanted fewer."
    )
    fast_factor: float = Field(
        1.5, gt=1, le=MAX_FAST_FACTOR, description="Demand/target at or above this takes the fast path up."
    )
    fast_hold: Duration = Field(timedelta(seconds=60), description="How long the fast path stays engaged.")
    max_step_up: int = Field(8, ge=1, le=MAX_COUNT)
    max_step_down: int = Field(2, ge=1, le=MAX_COUNT)
    instances_per_replica: int = Field(
        1, ge=1, le=MAX_INSTANCES, description="Model instances per allocation (capacity unit)."
    )
    drain: Duration = Field(timedelta(seconds=60), description="Time a scaled-in allocation gets to drain.")
    source: Literal["direct", "prometheus"] = Field(
        "direct", description="Where observations come from: Triton scraped directly, or PromQL."
    )
    prometheus: PrometheusSourceSpec | None = None

    @model_validator(mode="after")
    def _positive_times(self) -> ScalingPolicySpec:
        for name in ("evaluation_interval", "window"):
            if getattr(self, name) <= timedelta(0):
                raise FieldError(name, f"{name} must be positive")
        if self.source == "prometheus" and self.prometheus is None:
            raise FieldError("prometheus", 'source = "prometheus" needs a [scaling.policy.prometheus] address')
        return self


class ScalingSpec(_Strict):
    """Group scaling bounds (Nomad's scaling block) and the autoscaler policy."""

    enabled: bool = False
    min: int = Field(1, ge=0, le=MAX_COUNT)
    max: int = Field(1, ge=1, le=MAX_COUNT)
    policy: ScalingPolicySpec = Field(default_factory=ScalingPolicySpec)

    @model_validator(mode="after")
    def _bounds(self) -> ScalingSpec:
        if self.min > self.max:
            raise FieldError("min", f"min {self.min} must be <= max {self.max}")
        return self

    def policy_config_kwargs(self) -> dict[str, float | int | None]:
        """Keyword arguments for `nomad_triton.autoscale.policy.ScalingPolicyConfig` (seconds as floats)."""
        p = self.policy
        return {
            "min_count": self.min,
            "max_count": self.max,
            "target_utilization": p.target_utilization,
            "target_saturation": p.target_queue_compute_ratio,
            "target_pending_per_replica": p.target_pending_per_replica,
            "latency_slo_ms": p.latency_slo_ms,
            "band": p.tolerance,
            "up_cooldown_s": p.cooldown_up.total_seconds(),
            "down_cooldown_s": p.cooldown_down.total_seconds(),
            "down_stabilization_s": p.scale_down_stabilization.total_seconds(),
            "fast_factor": p.fast_factor,
            "fast_hold_s": p.fast_hold.total_seconds(),
            "max_step_up": p.max_step_up,
            "max_step_down": p.max_step_down,
            "window_s": p.window.total_seconds(),
            "instances_per_replica": p.instances_per_replica,
            "drain_s": p.drain.total_seconds(),
            "interval_s": p.evaluation_interval.total_seconds(),
        }


class PoolGpusOverride(_Strict):
    """A pool's GPU request, field by field over the spec's `[gpus]` (unset fields keep the spec's)."""

    count: int | None = Field(None, ge=0, le=MAX_GPUS)
    device: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+){0,2}$")
    min_memory: str | None = None
    model: str | None = None
    preferred_model: str | None = None
    preferred_weight: int | None = Field(None, ge=-100, le=100)


class PoolResourcesOverride(_Strict):
    """A pool's CPU/memory, field by field over the spec's `[resources]`."""

    cpu: int | None = Field(None, ge=1, le=MAX_CPU_MHZ)
    memory: int | None = Field(None, ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)
    memory_max: int | None = Field(None, ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)


class PoolScalingOverride(_Strict):
    """A pool's scaling bounds over the spec's `[scaling]` (the policy itself is shared)."""

    min: int | None = Field(None, ge=0, le=MAX_COUNT)
    max: int | None = Field(None, ge=1, le=MAX_COUNT)


class PoolSpec(_Strict):
    """One `[[pools]]` entry: the same service on another node pool, as its own job `<name>-<pool>`.

    Why overrides and not a second spec: the pools of one service differ in where they run and how
    big they are, never in what they serve; one spec keeps the models, health and rollout settings
    identical across pools, and each rendered job is still complete and valid on its own.
    """

    name: str = Field(description="Pool key; the job is named <spec name>-<pool name>.")
    node_pool: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]{1,128}$", description="Nomad node pool (default: the pool's name)."
    )
    count: int | None = Field(None, ge=0, le=MAX_COUNT)
    datacenters: list[str] | None = Field(None, min_length=1)
    gpus: PoolGpusOverride | None = None
    resources: PoolResourcesOverride | None = None
    scaling: PoolScalingOverride | None = None

    @field_validator("name")
    @classmethod
    def _pool_name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", value):
            raise ValueError(
                f"pool name {value!r} must be letters, digits, '_', '.', '-' and start with a letter or digit"
            )
        return value

    def overrides(self) -> dict[str, Any]:
        """The spec fields this pool sets (nested sections only with the keys given)."""
        out: dict[str, Any] = {"node_pool": self.node_pool or self.name}
        for key in ("count", "datacenters"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        for key in ("gpus", "resources", "scaling"):
            section = getattr(self, key)
            if section is not None:
                out[key] = section.model_dump(exclude_none=True)
        return out


class DeploymentSpec(_Strict):
    """One Triton service on Nomad: everything `render` needs and nothing it would have to guess."""

    name: str = Field(description="Nomad job ID (also the default service name).")
    namespace: str = Field("default", pattern=r"^[A-Za-z0-9_-]{1,128}$")
    region: str = Field("global", min_length=1, pattern=r"^\S+$")
    datacenters: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    node_pool: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    priority: int = Field(50, ge=1, le=100)
    group: str = Field("triton", pattern=r"^[A-Za-z0-9_-]{1,128}$", description="Task group name.")
    task: str = Field("server", pattern=r"^[A-Za-z0-9_-]{1,128}$", description="Task name.")
    count: int = Field(1, ge=0, le=MAX_COUNT)
    driver: Driver
    model_repository: ModelRepositorySpec
    ports: PortsSpec = Field(default_factory=PortsSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    gpus: GpuSpec = Field(default_factory=GpuSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    health: HealthSpec = Field(default_factory=HealthSpec)
    restart: RestartSpec = Field(default_factory=RestartSpec)
    reschedule: RescheduleSpec = Field(default_factory=RescheduleSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    env: dict[str, str] = Field(default_factory=dict)
    meta: dict[str, str] = Field(default_factory=dict)
    pools: list[PoolSpec] = Field(
        default_factory=list, description="Render one job per pool, named <name>-<pool> (empty: one job)."
    )

    @field_validator("name")
    @classmethod
    def _job_id(cls, value: str) -> str:
        if not JOB_NAME_RE.match(value):
            raise ValueError(
                "must be 1-128 of letters, digits, '_', '.', '-' and start with a letter or digit"
            )
        return value

    @field_validator("datacenters")
    @classmethod
    def _dcs(cls, value: list[str]) -> list[str]:
        for dc in value:
            if not dc or any(c.isspace() for c in dc):
                raise ValueError(f"invalid datacenter {dc!r}")
        return value

    @field_validator("env", "meta", mode="before")
    @classmethod
    def _scalars_as_strings(cls, value: Any) -> Any:
        """`OMP_NUM_THREADS = 2` / `--set env.X=1` mean the string, as in Nomad's HCL `env`/`meta` maps.

        Why: `--set` reads values as TOML literals, so every numeric env value was refused with
        "Input should be a valid string". Booleans are written the way HCL/Go would ("true").
        """
        if not isinstance(value, dict):
            return value
        return {
            k: (str(v).lower() if isinstance(v, bool) else str(v)) if isinstance(v, int | float) else v
            for k, v in value.items()
        }

    @field_validator("env")
    @classmethod
    def _env_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not ENV_KEY_RE.match(key):
                raise ValueError(f"invalid environment variable name {key!r}")
            if key.startswith("NOMAD_"):
                raise ValueError(f"{key!r}: NOMAD_* variables are set by Nomad")
        return value

    @field_validator("meta")
    @classmethod
    def _meta_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not META_KEY_RE.match(key):
                raise ValueError(f"invalid meta key {key!r} (letters, digits, '_', '.', '-')")
        return value

    @model_validator(mode="after")
    def _cross(self) -> DeploymentSpec:
        if self.scaling.enabled and not self.scaling.min <= self.count <= self.scaling.max:
            raise FieldError("count", f"count {self.count} must lie within scaling.min..scaling.max")
        if self.driver.type == "raw_exec" and self.model_repository.host_volume:
            raise FieldError(
                "model_repository.host_volume", "host_volume needs the docker driver; use path with raw_exec"
            )
        if self.health.service_name is None and not SERVICE_NAME_RE.match(self.name):
            raise FieldError("name", "not a valid service name (RFC 1123 label); set health.service_name")
        self._check_pools()
        return self

    def _check_pools(self) -> None:
        """Every pool must yield a valid job on its own; errors name `pools.<i>.<field>`."""
        seen: dict[str, int] = {}
        for i, pool in enumerate(self.pools):
            if pool.name in seen:
                raise FieldError(f"pools.{i}.name", f"pool {pool.name!r} is declared twice (also pools.{seen[pool.name]})")
            seen[pool.name] = i
            job_name = f"{self.name}-{pool.name}"
            if not JOB_NAME_RE.match(job_name):
                raise FieldError(
                    f"pools.{i}.name",
                    f"job name {job_name!r} would be refused by Nomad (1-128 of letters, digits, '_', '.', '-')",
                )
            try:
                self.for_pool(pool)
            except ValidationError as exc:
                err = exc.errors()[0]
                cause = (err.get("ctx") or {}).get("error")
                loc = [str(x) for x in err["loc"]]
                if isinstance(cause, FieldError):
                    loc += cause.field.split(".")
                where = ".".join(loc) or "name"
                if isinstance(cause, FieldError):
                    msg = str(cause)
                else:  # our wording, never pydantic's
                    msg = translate(DeploymentSpec, err)
                raise FieldError(f"pools.{i}.{where}", f"in the job for pool {pool.name!r}: {msg}") from None

    def for_pool(self, pool: PoolSpec) -> DeploymentSpec:
        """The complete single-job spec of one pool: this spec, the pool's overrides, no pools."""
        data = self.model_dump(mode="python", exclude={"pools"})
        for key, value in pool.overrides().items():
            if isinstance(value, dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        data["name"] = f"{self.name}-{pool.name}"
        return DeploymentSpec.model_validate(data)

    def job_specs(self) -> list[DeploymentSpec]:
        """One spec per Nomad job this spec renders to: itself without pools, one per pool with."""
        return [self.for_pool(p) for p in self.pools] if self.pools else [self]

    @property
    def repository_path(self) -> str:
        """Model repository path inside the task (what `serve --models` gets)."""
        return self.model_repository.task_path(self.driver.type)

    @property
    def service_name(self) -> str:
        """Name of the Nomad service that fronts the Triton HTTP port."""
        return self.health.service_name or self.name
