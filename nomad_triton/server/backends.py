"""Turn a validated model folder into inference callables: a Python entry point or an ONNX session.

Everything that can fail (importing the entry point, opening the ONNX file, matching its declared
inputs and outputs) happens here, before Triton starts, so a broken model stops the server at once
with a line naming the file and field instead of surfacing as a failed load minutes later.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from nomad_triton.server.model_repo import MODEL_FILE, LoadedModel, RepositoryError

Batch = dict[str, np.ndarray]
InferFn = Callable[[Batch], Batch]


@dataclass(frozen=True)
class PreparedModel:
    """A model ready to bind: one inference function per Triton instance."""

    model: LoadedModel
    instances: list[InferFn]


def _import_from_folder(folder: Path, model_name: str, module: str) -> ModuleType:
    """Import `module` from the model folder under a private name so two models can both ship model.py."""
    rel = Path(*module.split("."))
    candidates = [folder / rel.with_suffix(".py"), folder / rel / "__init__.py"]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"no {rel}.py in {folder}")
    qualname = f"nomad_triton_models.{model_name.replace('.', '_').replace('-', '_')}.{module}"
    spec = importlib.util.spec_from_file_location(qualname, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[qualname] = mod
    spec.loader.exec_module(mod)
    return mod


def _python_instances(model: LoadedModel) -> list[InferFn]:
    spec = model.spec
    where = model.folder / MODEL_FILE
    assert spec.entrypoint is not None
    module, func_name = spec.entrypoint.split(":")
    try:
        mod = _import_from_folder(model.folder, spec.name, module)
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


def _onnx_providers() -> list[str]:
    """CUDA when this onnxruntime build and machine offer it, CPU always as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _onnx_instances(model: LoadedModel) -> list[InferFn]:
    import onnxruntime as ort

    spec = model.spec
    where = model.folder / MODEL_FILE
    assert spec.onnx is not None
    try:
        session = ort.InferenceSession(str(model.folder / spec.onnx), providers=_onnx_providers())
    except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
        raise RepositoryError([f"{where}: onnx: cannot load {spec.onnx!r}: {exc}"]) from None
    have_in = {i.name for i in session.get_inputs()}
    have_out = {o.name for o in session.get_outputs()}
    for field, declared, have in (("inputs", spec.inputs, have_in), ("outputs", spec.outputs, have_out)):
        for i, tensor in enumerate(declared):
            if tensor.name not in have:
                raise RepositoryError(
                    [f"{where}: {field}.{i}.name: {tensor.name!r} is not in {spec.onnx} ({sorted(have)})"]
                )
    missing = sorted(have_in - {t.name for t in spec.inputs})
    if missing:
        raise RepositoryError([f"{where}: inputs: {spec.onnx} also needs {missing}"])
    out_names = [t.name for t in spec.outputs]

    def infer(batch: Batch) -> Batch:
        # InferenceSession.run is thread-safe, so instances share one session (and its memory).
        return dict(zip(out_names, session.run(out_names, batch), strict=True))

    return [infer] * spec.instance_count


def prepare(model: LoadedModel) -> PreparedModel:
    """Build the instances of one model (raises RepositoryError on a bad folder)."""
    build = _python_instances if model.spec.backend == "python" else _onnx_instances
    return PreparedModel(model=model, instances=build(model))


def prepare_all(models: list[LoadedModel]) -> list[PreparedModel]:
    """Prepare every model, reporting all broken folders together."""
    prepared: list[PreparedModel] = []
    errors: list[str] = []
    for model in models:
        try:
            prepared.append(prepare(model))
        except RepositoryError as exc:
            errors.extend(exc.lines)
    if errors:
        raise RepositoryError(errors)
    return prepared


def check_outputs(model: LoadedModel, result: Any) -> Batch:
    """Fail a request loudly (not the server) when user code returns the wrong outputs."""
    if not isinstance(result, dict):
        raise TypeError(f"model {model.spec.name}: entry point returned {type(result).__name__}, not dict")
    missing = [t.name for t in model.spec.outputs if t.name not in result]
    if missing:
        raise KeyError(f"model {model.spec.name}: entry point did not return outputs {missing}")
    return {t.name: np.asarray(result[t.name], dtype=t.numpy_dtype) for t in model.spec.outputs}
