"""Run a Triton python-backend `model.py` (class TritonPythonModel) as PyTriton callables.

Triton calls `initialize(args)` once per instance, `execute(requests)` with the requests its
scheduler grouped (one response per request, in order) and `finalize()` at unload. PyTriton hands an
undecorated callable the same thing, a list of requests, so each instance is one TritonPythonModel
object behind one callable; `triton_python_backend_utils` comes from pb_utils.py.

`initialize` runs here, before Triton starts: a model whose initialize raises is a broken model
(its traceback goes to the log, one line to the operator) rather than a failed load later.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from nomad_triton.server import pb_utils
from nomad_triton.server.model_repo import LoadedModel, RepositoryError
from nomad_triton.server.user_code import import_from_folder

LOG = logging.getLogger("nomad_triton.server")
Requests = list[Any]  # pytriton.proxy.types.Request: .data (dict of arrays) and .parameters


def _args(model: LoadedModel, version: int, instance: int) -> dict[str, str]:
    """The `args` dict Triton's python backend passes to initialize()."""
    return {
        "model_config": json.dumps(model.config_json),
        "model_instance_kind": "GPU" if model.instance_kind == "KIND_GPU" else "CPU",
        "model_instance_name": f"{model.spec.name}_0_{instance}",
        "model_instance_device_id": str(model.gpus[instance % len(model.gpus)] if model.gpus else 0),
        "model_repository": str(model.folder),
        "model_version": str(version),
        "model_name": model.spec.name,
    }


def _callable(model: LoadedModel, version: int, obj: Any) -> Callable[[Requests], list[dict[str, np.ndarray]]]:
    names = [t.name for t in model.spec.outputs]
    label = f"model {model.spec.name} v{version}"

    def infer(requests: Requests) -> list[dict[str, np.ndarray]]:
        batch = [
            pb_utils.InferenceRequest(
                inputs=[pb_utils.Tensor(k, v) for k, v in r.data.items()],
                parameters=r.parameters or {}, requested_output_names=names,
                model_name=model.spec.name, model_version=version,
            )
            for r in requests
        ]
        responses = obj.execute(batch)
        if not isinstance(responses, list | tuple) or len(responses) != len(batch):
            got = len(responses) if isinstance(responses, list | tuple) else type(responses).__name__
            raise RuntimeError(f"{label}: execute() returned {got} responses for {len(batch)} requests")
        out = []
        for resp in responses:
            if resp.has_error():
                raise RuntimeError(f"{label}: {resp.error().message()}")
            tensors = {t.name(): t.as_numpy() for t in resp.output_tensors()}
            missing = [n for n in names if n not in tensors]
            if missing:
                raise RuntimeError(f"{label}: execute() did not return outputs {missing}")
            out.append({n: tensors[n] for n in names})
        return out

    return infer


def triton_python_instances(model: LoadedModel) -> dict[int, list[Callable[..., Any]]]:
    """Import each version's model.py and initialize one TritonPythonModel per instance."""
    pb_utils.install()
    out: dict[int, list[Callable[..., Any]]] = {}
    for version, path in sorted(model.versions.items()):
        where = path
        private = f"{model.spec.name}_v{version}"
        try:
            module = import_from_folder(path.parent, private, path.stem)
        except Exception as exc:  # any import-time failure of user code is a bad model
            LOG.error("importing %s failed:\n%s", path, traceback.format_exc())
            raise RepositoryError([f"{where}: cannot import: {type(exc).__name__}: {exc}"]) from None
        cls = getattr(module, "TritonPythonModel", None)
        if not isinstance(cls, type) or not callable(getattr(cls, "execute", None)):
            raise RepositoryError([f"{where}: no class TritonPythonModel with an execute() method"])
        instances = []
        for i in range(model.spec.instance_count):
            obj = cls()
            if callable(getattr(obj, "initialize", None)):
                try:
                    obj.initialize(_args(model, version, i))
                except Exception as exc:  # user code: traceback to the log, one line to the operator
                    LOG.error("%s: initialize() raised:\n%s", path, traceback.format_exc())
                    raise RepositoryError(
                        [f"{where}: initialize() raised {type(exc).__name__}: {exc} (traceback in the log)"]
                    ) from None
            instances.append(_callable(model, version, obj))
            _FINALIZERS.append(obj)
        out[version] = instances
    return out


_FINALIZERS: list[Any] = []


def finalize_all() -> None:
    """Call finalize() on every initialized model object (at shutdown), as Triton does at unload."""
    while _FINALIZERS:
        obj = _FINALIZERS.pop()
        fin = getattr(obj, "finalize", None)
        if callable(fin):
            try:
                fin()
            except Exception:  # a failing finalize must not block the shutdown of the rest
                LOG.error("finalize() raised:\n%s", traceback.format_exc())
