"""Turn a validated model folder into inference callables: a Python entry point, an ONNX session, a
Triton python-backend model.py (python_backend.py), TorchScript or a SavedModel (frameworks.py).

Everything that can fail (importing the entry point, opening the ONNX file, matching its declared
inputs and outputs) happens here, before Triton starts, so a broken model stops the server at once
with a line naming the file and field instead of surfacing as a failed load minutes later.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nomad_triton.server.model_repo import LoadedModel, RepositoryError
from nomad_triton.server.user_code import import_from_folder

LOG = logging.getLogger("nomad_triton.server")
Batch = dict[str, np.ndarray]
InferFn = Callable[[Batch], Batch]


@dataclass(frozen=True)
class PreparedModel:
    """A model ready to bind: per served version, one inference function per Triton instance.

    `batched` callables take one merged batch dict (PyTriton's @batch); the others (Triton python-backend
    models) take PyTriton's list of requests and return one output dict per request.
    """

    model: LoadedModel
    versions: dict[int, list[Callable[..., Any]]]
    batched: bool = True

    @property
    def instances(self) -> list[Callable[..., Any]]:
        """The instances of the default (highest) version, the one a request without a version gets."""
        return self.versions[max(self.versions)]


def _python_instances(model: LoadedModel) -> list[InferFn]:
    spec = model.spec
    where = model.where
    assert spec.entrypoint is not None
    module, func_name = spec.entrypoint.split(":")
    try:
        mod = import_from_folder(model.folder, spec.name, module)
    except Exception as exc:  # any import-time failure of user code is a bad model folder
        raise RepositoryError([f"{where}: entrypoint: cannot import {module!r}: {exc}"]) from None
    func = getattr(mod, func_name, None)
    if not callable(func):
        raise RepositoryError([f"{where}: entrypoint: {module!r} has no callable {func_name!r}"])
    try:
        inspect.signature(func).bind({}, **spec.parameters)
    except TypeError as exc:
        raise RepositoryError([f"{where}: parameters: {func_name}() does not accept them: {exc}"]) from None
    params = dict(spec.parameters)

    def infer(batch: Batch) -> Batch:
        return func(batch, **params)

    return [infer] * spec.instance_count


_ONNX_DTYPES = {
    "tensor(bool)": "bool", "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64", "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(float16)": "float16", "tensor(float)": "float32",
    "tensor(double)": "float64", "tensor(string)": "bytes",
}
_PROVIDER_SAID: list[str] = []


def _onnx_providers(kind: str = "KIND_AUTO", gpu: int | None = None) -> list[Any]:
    """CUDA when this onnxruntime build and machine offer it and the model may use a GPU (KIND_GPU
    pins `gpu`), CPU always as the fallback; which one is said once in the log."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    use_cuda = "CUDAExecutionProvider" in available and kind != "KIND_CPU"
    if not _PROVIDER_SAID:
        _PROVIDER_SAID.append("said")
        LOG.info("onnxruntime %s: ONNX models run on %s", ort.__version__,
                 "CUDAExecutionProvider (KIND_CPU models on CPU)" if "CUDAExecutionProvider" in available
                 else "CPUExecutionProvider (this onnxruntime build or machine offers no CUDA)")
    cuda = [("CUDAExecutionProvider", {"device_id": gpu or 0})] if use_cuda else []
    return [*cuda, "CPUExecutionProvider"]


def _onnx_session(model: LoadedModel, path: Path, gpu: int | None) -> Any:
    import onnxruntime as ort

    spec, where = model.spec, model.where
    rel = path.relative_to(model.folder) if path.is_relative_to(model.folder) else path
    try:
        session = ort.InferenceSession(str(path), providers=_onnx_providers(model.instance_kind, gpu))
    except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
        raise RepositoryError([f"{where}: onnx: cannot load {str(rel)!r}: {exc}"]) from None
    pbtxt = model.kind == "onnx" and where.name != "model.toml"
    have = {"inputs": {i.name: i for i in session.get_inputs()}, "outputs": {o.name: o for o in session.get_outputs()}}
    for field, declared in (("inputs", spec.inputs), ("outputs", spec.outputs)):
        label = field[:-1] if pbtxt else field
        for i, tensor in enumerate(declared):
            loc = f"{label}[{i}]" if pbtxt else f"{field}.{i}"
            node = have[field].get(tensor.name)
            if node is None:
                raise RepositoryError(
                    [f"{where}: {loc}.name: {tensor.name!r} is not in {rel} ({sorted(have[field])})"]
                )
            graph_dtype = _ONNX_DTYPES.get(node.type)
            if pbtxt and graph_dtype != tensor.dtype:
                raise RepositoryError([f"{where}: {loc}.data_type: config says {tensor.dtype}, {rel} has "
                                       f"{graph_dtype or node.type}"])
    missing = sorted(set(have["inputs"]) - {t.name for t in spec.inputs})
    if missing:
        raise RepositoryError([f"{where}: {'input' if pbtxt else 'inputs'}: {rel} also needs {missing}"])
    return session


def _onnx_instances_for(model: LoadedModel, path: Path) -> list[InferFn]:
    spec = model.spec
    gpus = model.gpus if model.instance_kind == "KIND_GPU" else []
    sessions: dict[int | None, Any] = {g: _onnx_session(model, path, g) for g in (gpus or [None])}
    out_names = [t.name for t in spec.outputs]
    reshape_in = {t.name: t.reshape for t in spec.inputs if t.reshape is not None}
    reshape_out = {t.name: t.shape for t in spec.outputs if t.reshape is not None}

    def _reshaped(value: np.ndarray, shape: list[int]) -> np.ndarray:
        lead = value.shape[:1] if spec.max_batch_size else ()
        return value.reshape(lead + tuple(shape))

    def make(session: Any) -> InferFn:
        def infer(batch: Batch) -> Batch:
            # Triton's reshape: clients send `dims`, the graph sees `reshape` (and back for outputs).
            feed = {k: _reshaped(v, reshape_in[k]) if k in reshape_in else v for k, v in batch.items()}
            # InferenceSession.run is thread-safe, so instances on one device share one session.
            outs = dict(zip(out_names, session.run(out_names, feed), strict=True))
            for k, dims in reshape_out.items():
                outs[k] = _reshaped(outs[k], dims)
            return outs

        return infer

    keys = list(sessions)
    return [make(sessions[keys[i % len(keys)]]) for i in range(spec.instance_count)]


def _onnx_instances(model: LoadedModel) -> dict[int, list[InferFn]]:
    return {v: _onnx_instances_for(model, path) for v, path in model.versions.items()}


def prepare(model: LoadedModel) -> PreparedModel:
    """Build the instances of one model (raises RepositoryError on a bad folder)."""
    if model.kind == "python":
        instances = _python_instances(model)
        return PreparedModel(model=model, versions={v: instances for v in model.versions})
    if model.kind == "onnx":
        return PreparedModel(model=model, versions=_onnx_instances(model))
    if model.kind == "triton_python":
        from nomad_triton.server.python_backend import triton_python_instances

        return PreparedModel(model=model, versions=triton_python_instances(model), batched=False)
    from nomad_triton.server.frameworks import framework_instances

    return PreparedModel(model=model, versions=framework_instances(model))


def prepare_partial(models: list[LoadedModel]) -> tuple[list[PreparedModel], dict[str, list[str]]]:
    """Prepare every model; the broken ones come back as their error lines, keyed by model name."""
    prepared: list[PreparedModel] = []
    broken: dict[str, list[str]] = {}
    for model in models:
        try:
            prepared.append(prepare(model))
        except RepositoryError as exc:
            broken[model.spec.name] = exc.lines
    return prepared, broken


def prepare_all(models: list[LoadedModel]) -> list[PreparedModel]:
    """Prepare every model, reporting all broken folders together."""
    prepared, broken = prepare_partial(models)
    if broken:
        raise RepositoryError([line for lines in broken.values() for line in lines])
    return prepared


def check_outputs(model: LoadedModel, result: Any) -> Batch:
    """Fail a request loudly (not the server) when user code returns the wrong outputs."""
    if not isinstance(result, dict):
        raise TypeError(f"model {model.spec.name}: entry point returned {type(result).__name__}, not dict")
    missing = [t.name for t in model.spec.outputs if t.name not in result]
    if missing:
        raise KeyError(f"model {model.spec.name}: entry point did not return outputs {missing}")
    return {t.name: np.asarray(result[t.name], dtype=t.numpy_dtype) for t in model.spec.outputs}
