"""Model repository: one folder per model, described by our `model.toml` or Triton's `config.pbtxt`.

Both files map to the same description (ModelSpec + LoadedModel): triton_config.py translates a
config.pbtxt, this module reads model.toml and walks the repository.

The whole repository is validated before Triton starts, because a server that comes up serving half
of its models passes health checks while silently failing the traffic for the missing half. Every
problem is reported as one line `<file>: <field>: <reason>` so an operator can fix it without a
traceback.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SkipValidation,
    ValidationError,
    field_validator,
    model_validator,
)

MODEL_FILE = "model.toml"

# Triton's datatypes that PyTriton maps to numpy; `bytes` is Triton's BYTES (numpy object arrays).
DTYPES: dict[str, type] = {
    "bool": np.bool_,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "float16": np.float16,
    "float32": np.float32,
    "float64": np.float64,
    "bytes": np.bytes_,
}

_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")  # PyTriton's rule for model names
_ENTRYPOINT_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
ParamValue = str | int | float | bool


class RepositoryError(Exception):
    """A model repository problem; `str()` is the one line shown to the operator."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class TensorSpec(BaseModel):
    """One input or output. With max_batch_size > 0 the shape excludes the batch dimension."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1)]
    dtype: str
    shape: Annotated[list[int], Field(min_length=1)]
    optional: bool = False
    reshape: list[int] | None = None  # what the backend sees; `shape` is what clients send (config.pbtxt)

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"unsupported dtype {value!r} (one of: {', '.join(DTYPES)})")
        return value

    @field_validator("shape")
    @classmethod
    def _dims(cls, value: list[int]) -> list[int]:
        for dim in value:
            if dim == 0 or dim < -1:
                raise ValueError(f"dimension {dim} must be positive or -1 (variable)")
        return value

    @property
    def numpy_dtype(self) -> type:
        return DTYPES[self.dtype]


class DynamicBatching(BaseModel):
    """Triton's dynamic batcher: requests wait up to max_queue_delay_us to be grouped into a batch."""

    model_config = ConfigDict(extra="forbid")

    preferred_batch_sizes: list[Annotated[int, Field(gt=0)]] = []
    max_queue_delay_us: Annotated[int, Field(ge=0, le=10_000_000)] = 0


class ModelSpec(BaseModel):
    """The contents of one model.toml."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: Annotated[int, Field(ge=1)] = 1
    max_batch_size: Annotated[int, Field(ge=0, le=65536)] = 0
    dynamic_batching: DynamicBatching | None = None
    instance_count: Annotated[int, Field(ge=1, le=64)] = 1
    inputs: Annotated[list[TensorSpec], Field(min_length=1)]
    outputs: Annotated[list[TensorSpec], Field(min_length=1)]
    entrypoint: str | None = None
    onnx: str | None = None
    parameters: dict[str, ParamValue] = {}

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("may only contain letters, digits, '.', '_' and '-'")
        return value

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_form(cls, value: str | None) -> str | None:
        if value is not None and not _ENTRYPOINT_RE.match(value):
            raise ValueError(f"{value!r} is not of the form 'module:function'")
        return value

    @field_validator("onnx")
    @classmethod
    def _onnx_relative(cls, value: str | None) -> str | None:
        if value is not None and (Path(value).is_absolute() or ".." in Path(value).parts):
            raise ValueError(f"{value!r} must be a path inside the model folder")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if (self.entrypoint is None) == (self.onnx is None):
            raise ValueError("set exactly one of 'entrypoint' or 'onnx'")
        self.check_batching_and_names()
        return self

    def check_batching_and_names(self) -> None:
        """Rules shared by model.toml and config.pbtxt (Triton's own: no batcher without a batch size)."""
        if self.dynamic_batching is not None:
            if self.max_batch_size == 0:
                raise ValueError("dynamic_batching needs max_batch_size > 0")
            too_big = [b for b in self.dynamic_batching.preferred_batch_sizes if b > self.max_batch_size]
            if too_big:
                raise ValueError(f"dynamic_batching.preferred_batch_sizes {too_big} exceed max_batch_size")
        for group in (self.inputs, self.outputs):
            names = [t.name for t in group]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate tensor names {dupes}")

    @property
    def backend(self) -> Literal["python", "onnx"]:
        return "python" if self.entrypoint else "onnx"


BackendKind = Literal["python", "onnx", "triton_python", "torch", "tensorflow"]


class LoadedModel(BaseModel):
    """A validated model and the folder it came from (entry points and .onnx files resolve there).

    `versions` maps every version to serve onto its model file or folder; `source` is the file the
    description came from (model.toml or config.pbtxt), named in every message about this model.
    """

    folder: Path
    spec: SkipValidation[ModelSpec]  # validated where it is read (model.toml or config.pbtxt rules)
    source: Path | None = None
    kind: BackendKind | None = None
    versions: dict[int, Path] = {}
    # KIND_AUTO: CUDA when this machine and onnxruntime build offer it (model.toml, and config.pbtxt
    # without instance_group, as Triton defaults); KIND_CPU never uses a GPU; KIND_GPU pins `gpus`.
    instance_kind: Literal["KIND_CPU", "KIND_GPU", "KIND_AUTO"] = "KIND_AUTO"
    gpus: list[int] = []
    config_json: dict[str, object] = {}  # what a Triton python-backend model receives as args["model_config"]
    warnings: list[str] = []

    @model_validator(mode="after")
    def _defaults(self) -> LoadedModel:
        if self.source is None:
            self.source = self.folder / MODEL_FILE
        if self.kind is None:
            self.kind = self.spec.backend
        if not self.versions:
            target = self.folder / self.spec.onnx if self.spec.onnx else self.folder
            self.versions = {self.spec.version: target}
        return self

    @property
    def where(self) -> Path:
        assert self.source is not None
        return self.source


def _format_loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(root)"


def _format_error(path: Path, err: ValidationError) -> list[str]:
    lines = []
    for item in err.errors():
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            msg = "required field is missing"
        elif item["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{path}: {_format_loc(item['loc'])}: {msg}")
    return lines


def load_model_toml(folder: Path) -> LoadedModel:
    """Read and validate one model folder described by model.toml (repository.load_model dispatches)."""
    path = folder / MODEL_FILE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RepositoryError([f"{path}: invalid TOML: {exc}"]) from None
    raw.setdefault("name", folder.name)
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as exc:
        raise RepositoryError(_format_error(path, exc)) from None
    if spec.onnx is not None and not (folder / spec.onnx).is_file():
        raise RepositoryError([f"{path}: onnx: file not found: {folder / spec.onnx}"])
    return LoadedModel(folder=folder, spec=spec)
