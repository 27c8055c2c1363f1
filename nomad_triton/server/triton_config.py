"""Triton's `config.pbtxt` + version folders -> the same model description model.toml produces.

The file is parsed with Triton's own schema (`model_config_pb2` shipped by tritonclient) through
`google.protobuf.text_format`, so every field Triton knows is recognised and nothing else is. Each
field is then honoured, ignored with a warning, or refused (docs/triton-repository.md has the table):
a repository that would behave differently here than under tritonserver must not load silently.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from google.protobuf import json_format, text_format
from pydantic import ValidationError, model_validator
from tritonclient.grpc import model_config_pb2 as pb

from nomad_triton.server.model_repo import LoadedModel, ModelSpec, RepositoryError

CONFIG_FILE = "config.pbtxt"

# platform / backend -> (our backend kind, Triton's default model file name)
PLATFORMS: dict[str, tuple[str, str]] = {
    "onnxruntime_onnx": ("onnx", "model.onnx"),
    "pytorch_libtorch": ("torch", "model.pt"),
    "tensorflow_savedmodel": ("tensorflow", "model.savedmodel"),
}
BACKENDS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("onnx", "model.onnx"),
    "python": ("triton_python", "model.py"),
    "pytorch": ("torch", "model.pt"),
    "tensorflow": ("tensorflow", "model.savedmodel"),
}
SUPPORTED = "onnxruntime_onnx (backend onnxruntime), python, pytorch_libtorch, tensorflow_savedmodel"

# Triton data types -> model.toml dtype names (numpy); TYPE_BF16 has no numpy type to produce.
DATA_TYPES = {
    "TYPE_BOOL": "bool", "TYPE_UINT8": "uint8", "TYPE_UINT16": "uint16", "TYPE_UINT32": "uint32",
    "TYPE_UINT64": "uint64", "TYPE_INT8": "int8", "TYPE_INT16": "int16", "TYPE_INT32": "int32",
    "TYPE_INT64": "int64", "TYPE_FP16": "float16", "TYPE_FP32": "float32", "TYPE_FP64": "float64",
    "TYPE_STRING": "bytes",
}

# Top-level fields read nowhere but harmless to skip: served as if absent, with a warning.
IGNORED = ("optimization", "model_warmup", "response_cache", "metric_tags", "model_metrics",
           "cc_model_filenames", "runtime")
# Fields whose meaning this server cannot reproduce: the model is refused.
REFUSED = {
    "sequence_batching": "sequence batching (stateful models) is not supported",
    "ensemble_scheduling": "ensembles are not supported; serve the member models and chain them in the client",
    "batch_input": "batch inputs are not supported",
    "batch_output": "batch outputs are not supported",
    "model_operations": "custom operation libraries are not supported",
    "model_repository_agents": "repository agents are not supported",
}


class _PbtxtSpec(ModelSpec):
    """ModelSpec without model.toml's 'entrypoint or onnx' rule: config.pbtxt names a platform instead."""

    @model_validator(mode="after")
    def _consistent(self) -> _PbtxtSpec:
        self.check_batching_and_names()
        return self


def _syntax_line(path: Path, exc: text_format.ParseError) -> str:
    text = str(exc)
    where = f"{path}:{exc.GetLine()}:{exc.GetColumn()}" if exc.GetLine() else str(path)
    if m := re.search(r'has no field named "([^"]+)"', text):
        return f"{where}: {m.group(1)}: unknown field (not part of Triton's model configuration)"
    if m := re.search(r'Enum type "[\w.]+" has no value named (\w+) for field (\w+)', text):
        return f"{where}: {m.group(2)}: unknown value {m.group(1)!r}"
    if m := re.search(r'should not have multiple "(\w+)" fields', text):
        return f"{where}: {m.group(1)}: given more than once"
    if m := re.search(r'Field "(\w+)" is specified along with field "(\w+)", another member of oneof', text):
        return f"{where}: {m.group(1)}: cannot be combined with {m.group(2)} (choose one of them)"
    return f"{where}: syntax error: not valid protobuf text format here"


def parse_config(path: Path) -> pb.ModelConfig:
    """Parse config.pbtxt with Triton's schema; one line with line and column on a syntax error."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RepositoryError([f"{path}: not UTF-8 text"]) from None
    config = pb.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise RepositoryError([_syntax_line(path, exc)]) from None
    return config


def version_folders(folder: Path) -> dict[int, Path]:
    """Numeric sub-folders, as Triton reads them (anything else in the model folder is not a version)."""
    out = {}
    for child in folder.iterdir():
        if child.is_dir() and child.name.isdigit() and int(child.name) > 0:
            out[int(child.name)] = child
    return out


def select_versions(config: pb.ModelConfig, available: list[int], where: Path) -> list[int]:
    """Triton's version_policy: latest N (default 1), all, or specific versions that must exist."""
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return sorted(available)
    if choice == "specific":
        wanted = sorted(set(policy.specific.versions))
        if not wanted:
            raise RepositoryError([f"{where}: version_policy.specific.versions: empty; name at least one version"])
        missing = [v for v in wanted if v not in available]
        if missing:
            raise RepositoryError([
                f"{where}: version_policy.specific.versions: version(s) {missing} have no folder "
                f"(version folders present: {sorted(available) or 'none'})"
            ])
        return wanted
    n = policy.latest.num_versions if choice == "latest" else 1
    if n < 1:
        raise RepositoryError([f"{where}: version_policy.latest.num_versions: must be at least 1, got {n}"])
    return sorted(available)[-n:]


def _kind(config: pb.ModelConfig, where: Path) -> tuple[str, str]:
    platform, backend = config.platform, config.backend
    if not platform and not backend:
        raise RepositoryError([f"{where}: platform: neither 'platform' nor 'backend' is set (supported: {SUPPORTED})"])
    if backend in BACKENDS and platform in PLATFORMS and BACKENDS[backend][0] != PLATFORMS[platform][0]:
        raise RepositoryError([f"{where}: backend: {backend!r} contradicts platform {platform!r}; set one of them"])
    if backend in BACKENDS and (not platform or platform in PLATFORMS):
        return BACKENDS[backend]
    if platform in PLATFORMS and not backend:
        return PLATFORMS[platform]
    field, value = ("backend", backend) if backend else ("platform", platform)
    hint = " (convert it to ONNX, or serve it with tritonserver)" if "tensorrt" in value else ""
    raise RepositoryError([
        f"{where}: {field}: model {config.name or where.parent.name!r} uses {value!r}, which this server "
        f"cannot run (supported: {SUPPORTED}){hint}"
    ])


def _tensor(t: pb.ModelInput | pb.ModelOutput, field: str, i: int, where: Path, warnings: list[str]) -> dict:
    dtype_name = pb.DataType.Name(t.data_type)
    if dtype_name not in DATA_TYPES:
        produce = "cannot be produced (no numpy type)" if dtype_name == "TYPE_BF16" else "is missing or invalid"
        raise RepositoryError([f"{where}: {field}[{i}].data_type: {dtype_name} {produce} "
                               f"(supported: {', '.join(DATA_TYPES)})"])
    if t.is_shape_tensor:
        raise RepositoryError([f"{where}: {field}[{i}].is_shape_tensor: shape tensors are not supported"])
    if getattr(t, "allow_ragged_batch", False):
        raise RepositoryError([f"{where}: {field}[{i}].allow_ragged_batch: ragged batching is not supported"])
    if getattr(t, "format", 0):
        warnings.append(f"{where}: {field}[{i}].format: ignored (a hint for Triton's image backends)")
    if getattr(t, "label_filename", ""):
        warnings.append(f"{where}: {field}[{i}].label_filename: ignored (no classification extension)")
    dims = list(t.dims)
    out: dict = {"name": t.name, "dtype": DATA_TYPES[dtype_name], "shape": dims,
                 "optional": bool(getattr(t, "optional", False))}
    if t.HasField("reshape"):
        shape = list(t.reshape.shape)
        if -1 not in dims and -1 not in shape and math.prod(dims) != math.prod(shape):
            raise RepositoryError([
                f"{where}: {field}[{i}].reshape: shape {shape} holds {math.prod(shape)} elements but dims "
                f"{dims} hold {math.prod(dims)}; they must match"
            ])
        out["reshape"] = shape
    return out


def _format_validation(where: Path, err: ValidationError) -> list[str]:
    rename = {"inputs": "input", "outputs": "output", "shape": "dims", "instance_count": "instance_group",
              "preferred_batch_sizes": "preferred_batch_size", "max_queue_delay_us": "max_queue_delay_microseconds"}
    lines = []
    for item in err.errors():
        parts = [rename.get(str(p), str(p)) for p in item["loc"]]
        loc = ".".join(f"[{p}]" if p.isdigit() else p for p in parts).replace(".[", "[")
        msg = item["msg"].removeprefix("Value error, ")
        for ours, triton in rename.items():
            msg = msg.replace(f".{ours}", f".{triton}")
        lines.append(f"{where}: {loc}: {msg}" if loc else f"{where}: {msg}")
    return lines


def _instances(config: pb.ModelConfig, where: Path, allow_cpu_fallback: bool,
               warnings: list[str]) -> tuple[int, str, list[int]]:
    """Instance count, kind and pinned GPUs; KIND_GPU without a GPU is refused unless falling back."""
    from nomad_triton.probe.gpu import read_gpus

    count, kind, gpus = 0, "KIND_AUTO" if not config.instance_group else "KIND_CPU", []
    for i, group in enumerate(config.instance_group):
        kind_name = pb.ModelInstanceGroup.Kind.Name(group.kind)
        if kind_name == "KIND_MODEL":
            raise RepositoryError([f"{where}: instance_group[{i}].kind: KIND_MODEL is not supported"])
        if group.count < 0:
            raise RepositoryError([f"{where}: instance_group[{i}].count: must be at least 1, got {group.count}"])
        group_gpus = list(group.gpus)
        for extra in ("rate_limiter", "secondary_devices", "profile", "passive", "host_policy"):
            present = group.HasField(extra) if extra == "rate_limiter" else bool(getattr(group, extra))
            if present:
                warnings.append(f"{where}: instance_group[{i}].{extra}: ignored by this server")
        count += (group.count or 1) * max(1, len(group_gpus) if kind_name != "KIND_CPU" else 1)
        if kind_name in ("KIND_GPU", "KIND_AUTO"):
            report = read_gpus()
            present = [g.index for g in report.gpus] if report.available else []
            if kind_name == "KIND_AUTO" and not present:
                continue
            if not present:
                if not allow_cpu_fallback:
                    raise RepositoryError([
                        f"{where}: instance_group[{i}].kind: KIND_GPU but this machine has no usable GPU "
                        f"({report.reason or 'no devices'}); pass --allow-cpu-fallback to run it on CPU"
                    ])
                warnings.append(f"{where}: instance_group[{i}].kind: KIND_GPU without a GPU; running on CPU "
                                "(--allow-cpu-fallback)")
                continue
            bad = [g for g in group_gpus if g not in present]
            if bad:
                raise RepositoryError([f"{where}: instance_group[{i}].gpus: device(s) {bad} do not exist "
                                       f"(this machine has GPU(s) {present})"])
            kind, gpus = "KIND_GPU", sorted(set(gpus) | set(group_gpus or present[:1]))
    return max(count, 1), kind, gpus


def model_config_json(config: pb.ModelConfig) -> dict:
    """The JSON a Triton python-backend model gets as args['model_config'] (dims as numbers, as Triton sends)."""
    data = json_format.MessageToDict(config, preserving_proto_field_name=True)
    data.setdefault("max_batch_size", 0)
    for group in ("input", "output"):
        for tensor in data.get(group, []):
            tensor["dims"] = [int(d) for d in tensor.get("dims", [])]
            if "reshape" in tensor:
                tensor["reshape"]["shape"] = [int(d) for d in tensor["reshape"].get("shape", [])]
    return data


def load_triton_model(folder: Path, allow_cpu_fallback: bool = False) -> LoadedModel:
    """Read <folder>/config.pbtxt and its version folders into a LoadedModel (RepositoryError if bad)."""
    where = folder / CONFIG_FILE
    config = parse_config(where)
    if config.name and config.name != folder.name:
        raise RepositoryError([f"{where}: name: {config.name!r} does not match its folder name {folder.name!r}"])
    config.name = folder.name
    kind, default_file = _kind(config, where)
    warnings: list[str] = []
    for field, why in REFUSED.items():
        if config.HasField(field) if field in ("sequence_batching", "ensemble_scheduling", "model_operations",
                                               "model_repository_agents") else len(getattr(config, field)):
            raise RepositoryError([f"{where}: {field}: {why}"])
    if config.model_transaction_policy.decoupled:
        raise RepositoryError([f"{where}: model_transaction_policy.decoupled: decoupled models are not supported"])
    for field in IGNORED:
        value = getattr(config, field)
        present = config.HasField(field) if field in ("optimization", "response_cache", "model_metrics") else bool(value)
        if present:
            warnings.append(f"{where}: {field}: ignored by this server")
    if not config.input or not config.output:
        missing = "input" if not config.input else "output"
        raise RepositoryError([f"{where}: {missing}: at least one {missing} is required (no auto-complete here)"])
    inputs = [_tensor(t, "input", i, where, warnings) for i, t in enumerate(config.input)]
    outputs = [_tensor(t, "output", i, where, warnings) for i, t in enumerate(config.output)]
    count, instance_kind, gpus = _instances(config, where, allow_cpu_fallback, warnings)
    dyn = None
    if config.HasField("dynamic_batching"):
        db = config.dynamic_batching
        dyn = {"preferred_batch_sizes": list(db.preferred_batch_size),
               "max_queue_delay_us": int(db.max_queue_delay_microseconds)}
        for extra in ("preserve_ordering", "priority_levels", "default_queue_policy", "priority_queue_policy"):
            if (db.HasField(extra) if extra == "default_queue_policy" else getattr(db, extra)):
                warnings.append(f"{where}: dynamic_batching.{extra}: ignored by this server")
    params = {key: value.string_value for key, value in config.parameters.items()}

    available = version_folders(folder)
    if not available:
        raise RepositoryError([f"{folder}: no version folders (expected e.g. {folder}/1/{default_file})"])
    selected = select_versions(config, list(available), where)
    filename = config.default_model_filename or default_file
    versions: dict[int, Path] = {}
    for v in selected:
        target = available[v] / filename
        if not target.exists():
            raise RepositoryError([f"{available[v]}: no model file {filename!r} for version {v} "
                                   "(set by default_model_filename or the platform)"])
        versions[v] = target
    try:
        spec = _PbtxtSpec.model_validate({
            "name": folder.name, "version": max(selected), "max_batch_size": config.max_batch_size,
            "dynamic_batching": dyn, "instance_count": count, "inputs": inputs, "outputs": outputs,
            "onnx": filename if kind == "onnx" else None, "parameters": params,
        })
    except ValidationError as exc:
        raise RepositoryError(_format_validation(where, exc)) from None
    return LoadedModel(folder=folder, spec=spec, source=where, kind=kind, versions=versions,
                       instance_kind=instance_kind, gpus=gpus, config_json=model_config_json(config),
                       warnings=warnings)
