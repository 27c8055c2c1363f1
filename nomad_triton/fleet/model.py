"""The fleet file: ordered stages of specs (or spec + pool pairs), each with an optional gate.

Why a separate file and not a list of specs on the command line: the order and the gates ARE the
rollout policy (staging, then one canary pool, then production), and they belong in review next to
the specs. Every problem is found before Nomad is contacted, and reported in one line that names
the fleet file, the stage and the field (`fleet.toml: stages.1 (canary): specs.0.pool: ...`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nomad_triton.spec import DeploymentSpec, SpecError, load_spec
from nomad_triton.spec.durations import Duration
from nomad_triton.spec.loader import read_document


class FleetError(Exception):
    """Bad fleet input: `source` (the fleet file), `where` (stage/pool/field), `message`."""

    def __init__(self, source: str, where: str, message: str) -> None:
        self.source, self.where, self.message = source, where, message
        super().__init__(self.line())

    def line(self) -> str:
        """The one line the CLI prints."""
        return ": ".join(p for p in (self.source, self.where, self.message) if p)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpecRef(_Strict):
    """One entry of a stage: a spec file, optionally narrowed to some of its pools."""

    spec: str = Field(min_length=1, description="Spec file, relative to the fleet file's folder.")
    pool: str | None = Field(None, min_length=1, description="Only this pool of the spec.")
    pools: list[str] | None = Field(None, min_length=1, description="Only these pools of the spec.")
    set: list[str] = Field(default_factory=list, description="--set overrides for this spec (KEY=VALUE).")

    @model_validator(mode="after")
    def _one_selector(self) -> SpecRef:
        if self.pool is not None and self.pools is not None:
            raise ValueError("set pool or pools, not both")
        return self

    def selected_pools(self) -> list[str] | None:
        if self.pool is not None:
            return [self.pool]
        return self.pools


class StageSpec(_Strict):
    """One stage: its jobs deploy in parallel; the gate decides whether the next stage may start."""

    name: str | None = Field(None, min_length=1)
    specs: list[SpecRef] = Field(description="Spec files (or {spec, pool|pools, set}) of this stage.")
    soak: Duration = Field(timedelta(0), description="After every job is healthy, watch this long.")
    soak_interval: Duration = Field(timedelta(seconds=2), description="Probe interval during the soak.")
    verify: bool = Field(False, description="One real inference per model through service discovery.")
    max_p95_latency_ms: float | None = Field(None, gt=0)
    max_error_ratio: float | None = Field(None, ge=0, le=1)
    max_queue_compute_ratio: float | None = Field(None, gt=0)

    @field_validator("specs", mode="before")
    @classmethod
    def _strings_are_specs(cls, value: Any) -> Any:
        """`specs = ["a.toml"]` is short for `specs = [{ spec = "a.toml" }]`."""
        if isinstance(value, list):
            return [{"spec": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("specs")
    @classmethod
    def _not_empty(cls, value: list[SpecRef]) -> list[SpecRef]:
        if not value:
            raise ValueError("a stage needs at least one spec")
        return value

    @model_validator(mode="after")
    def _interval(self) -> StageSpec:
        if self.soak_interval <= timedelta(0):
            raise ValueError("soak_interval must be positive")
        return self

    @property
    def has_thresholds(self) -> bool:
        return any(
            v is not None for v in (self.max_p95_latency_ms, self.max_error_ratio, self.max_queue_compute_ratio)
        )


class FleetSpec(_Strict):
    """The whole fleet file."""

    name: str = Field("fleet", min_length=1)
    timeout: Duration = Field(timedelta(minutes=10), description="Deadline of each job's deployment.")
    stages: list[StageSpec] = Field(min_length=1)


@dataclass(frozen=True)
class FleetJob:
    """One Nomad job of the fleet: its complete single-job spec and where it came from."""

    spec: DeploymentSpec
    spec_path: Path
    pool: str | None  # None: a spec without pools
    stage_index: int
    where: str  # "stages.1 (canary): specs.0" for messages

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Stage:
    index: int
    name: str
    gate: StageSpec
    jobs: tuple[FleetJob, ...]


@dataclass(frozen=True)
class Fleet:
    path: Path
    spec: FleetSpec
    stages: tuple[Stage, ...]

    @property
    def jobs(self) -> list[FleetJob]:
        return [j for s in self.stages for j in s.jobs]


def _where(loc: tuple[Any, ...], doc: dict[str, Any]) -> str:
    """`stages.1 (canary): specs.0` from a pydantic location, with the stage's name when it has one."""
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] == "stages" and parts[1].isdigit():
        stages = doc.get("stages") if isinstance(doc.get("stages"), list) else []
        i = int(parts[1])
        name = stages[i].get("name") if i < len(stages) and isinstance(stages[i], dict) else None
        head = f"stages.{i}" + (f" ({name})" if name else "")
        rest = ".".join(parts[2:])
        return head + (f": {rest}" if rest else "")
    return ".".join(parts)


_BOUNDS = {"less_than_equal": "at most {le}", "less_than": "below {lt}", "greater_than": "above {gt}",
           "greater_than_equal": "at least {ge}", "too_short": "not empty"}
_TYPES = {
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "float_type": "a number",
    "float_parsing": "a number",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "list_type": 'a list, e.g. ["jobs/a.toml"]',
    "model_type": 'a spec file name or a table such as { spec = "a.toml", pool = "gpu-l4" }',
    "dict_type": 'a spec file name or a table such as { spec = "a.toml", pool = "gpu-l4" }',
}


def _message(err: dict[str, Any]) -> str:
    """pydantic's error in our words: what was given and what is expected."""
    kind, msg, ctx = err["type"], err["msg"], err.get("ctx") or {}
    given = err.get("input")
    if kind == "extra_forbidden":
        return f"unknown key {str(err['loc'][-1])!r}"
    if kind == "missing":
        return "required field is missing"
    if kind in _BOUNDS:
        return f"must be {_BOUNDS[kind].format(**ctx)} (got {given!r})"
    if kind in _TYPES:
        return f"must be {_TYPES[kind]} (got {given!r})"
    return msg.removeprefix("Value error, ")


def _validate(path: Path, doc: dict[str, Any]) -> FleetSpec:
    try:
        return FleetSpec.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise FleetError(str(path), _where(tuple(err["loc"]), doc), _message(err)) from None


def _expand(path: Path, stage_i: int, stage: StageSpec, label: str) -> list[FleetJob]:
    jobs: list[FleetJob] = []
    for j, entry in enumerate(stage.specs):
        ref = entry
        where = f"{label}: specs.{j}"
        spec_path = (path.parent / ref.spec) if not Path(ref.spec).is_absolute() else Path(ref.spec)
        if not spec_path.is_file():
            raise FleetError(str(path), f"{where}.spec", f"spec file {ref.spec!r} not found (looked at {spec_path})")
        try:
            loaded = load_spec(spec_path, sets=ref.set)
        except SpecError as exc:
            raise FleetError(str(path), where, exc.line()) from None
        wanted = ref.selected_pools()
        if wanted is not None:
            known = {p.name: p for p in loaded.pools}
            for k, name in enumerate(wanted):
                if name not in known:
                    field = "pool" if ref.pool is not None else f"pools.{k}"
                    have = ", ".join(known) or "none: the spec declares no [[pools]]"
                    raise FleetError(
                        str(path), f"{where}.{field}", f"spec {ref.spec} has no pool {name!r} (its pools: {have})"
                    )
            jobs += [FleetJob(loaded.for_pool(known[n]), spec_path, n, stage_i, where) for n in wanted]
        elif loaded.pools:
            jobs += [FleetJob(loaded.for_pool(p), spec_path, p.name, stage_i, where) for p in loaded.pools]
        else:
            jobs.append(FleetJob(loaded, spec_path, None, stage_i, where))
    return jobs


def load_fleet(path: str | Path) -> Fleet:
    """Read and check a fleet file and every spec it names. Raises FleetError (exit 2 in the CLI)."""
    path = Path(path)
    try:
        doc = read_document(path)
    except SpecError as exc:
        raise FleetError(exc.source, exc.field, exc.message) from None
    spec = _validate(path, doc)
    stages: list[Stage] = []
    owner: dict[tuple[str, str], str] = {}  # (namespace, job) -> where it was first declared
    for i, st in enumerate(spec.stages):
        label = f"stages.{i}" + (f" ({st.name})" if st.name else "")
        jobs = _expand(path, i, st, label)
        for job in jobs:
            key = (job.spec.namespace, job.name)
            if key in owner:
                raise FleetError(
                    str(path),
                    job.where,
                    f"job {job.name!r} is already in the fleet at {owner[key]}; each job may appear once",
                )
            owner[key] = job.where
        stages.append(Stage(i, st.name or f"stage-{i + 1}", st, tuple(jobs)))
    names = [s.name for s in stages]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise FleetError(str(path), f"stages.{i}.name", f"stage name {name!r} is used twice")
    return Fleet(path, spec, tuple(stages))
