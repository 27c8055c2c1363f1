"""`triton_python_backend_utils` for Triton python-backend models run inside our PyTriton worker.

Triton's python backend gives `model.py` a module whose helper functions are plain Python
(shipped with PyTriton's tritonserver as backends/python/triton_python_backend_utils.py) and whose
classes (Tensor, InferenceRequest, InferenceResponse, TritonError, ...) live in the C++ stub. We load
that same helper file, unchanged, and add small numpy-backed versions of the classes, so a model
written for Triton (e.g. Triton's add_sub example) imports `triton_python_backend_utils` and runs
unchanged. BLS (model.exec), decoupled response senders and DLPack are not offered.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

MODULE_NAME = "triton_python_backend_utils"
LOG = logging.getLogger("nomad_triton.models")


class TritonError(Exception):
    """An error a model returns in an InferenceResponse (or raises)."""

    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class TritonModelException(Exception):
    """Raised by a model to fail a whole execute() call."""


class Tensor:
    """A named numpy array, as the python backend's pb_utils.Tensor."""

    def __init__(self, name: str, data: Any) -> None:
        if not isinstance(data, np.ndarray):
            raise TritonModelException(f"Tensor {name!r}: data must be a numpy array, got {type(data).__name__}")
        self._name, self._data = name, data

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._data

    def shape(self) -> list[int]:
        return list(self._data.shape)

    def is_cpu(self) -> bool:
        return True


class InferenceRequest:
    """One client request as execute() sees it: its input tensors and parameters."""

    def __init__(self, inputs: list[Tensor], request_id: str = "", parameters: dict[str, Any] | None = None,
                 requested_output_names: list[str] | None = None, model_name: str = "",
                 model_version: int = -1, **_: Any) -> None:
        self._inputs = inputs
        self._request_id = request_id
        self._parameters = parameters or {}
        self._requested = requested_output_names or []
        self._model_name, self._model_version = model_name, model_version

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def request_id(self) -> str:
        return self._request_id

    def parameters(self) -> str:
        import json

        return json.dumps(self._parameters)  # Triton hands parameters over as a JSON string

    def requested_output_names(self) -> list[str]:
        return self._requested

    def is_cancelled(self) -> bool:
        return False

    def flags(self) -> int:
        return 0

    def correlation_id(self) -> int:
        return 0

    def exec(self, *_: Any, **__: Any) -> Any:  # noqa: A003 - Triton's name
        raise TritonModelException("BLS (InferenceRequest.exec) is not supported by nomad-triton serve")


class InferenceResponse:
    """What execute() returns per request: output tensors, or an error."""

    def __init__(self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None,
                 parameters: Any = None) -> None:
        self._outputs = list(output_tensors or [])
        self._error = error

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


class Logger:
    """pb_utils.Logger: the model's log lines go to our log (stderr), tagged as model output."""

    @staticmethod
    def log_info(message: str) -> None:
        LOG.info("%s", message)

    @staticmethod
    def log_warn(message: str) -> None:
        LOG.warning("%s", message)

    @staticmethod
    def log_error(message: str) -> None:
        LOG.error("%s", message)

    @staticmethod
    def log_verbose(message: str) -> None:
        LOG.debug("%s", message)

    @staticmethod
    def log(message: str, level: int = 0) -> None:
        LOG.info("%s", message)


def _helpers_file() -> Path:
    import pytriton

    return Path(pytriton.__file__).parent / "tritonserver" / "backends" / "python" / f"{MODULE_NAME}.py"


def install() -> ModuleType:
    """Make `import triton_python_backend_utils` work in this process (idempotent)."""
    existing = sys.modules.get(MODULE_NAME)
    if existing is not None and getattr(existing, "_NOMAD_TRITON", False):
        return existing
    spec = importlib.util.spec_from_file_location(MODULE_NAME, _helpers_file())
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for obj in (TritonError, TritonModelException, Tensor, InferenceRequest, InferenceResponse, Logger):
        setattr(module, obj.__name__, obj)
    module._NOMAD_TRITON = True  # type: ignore[attr-defined]
    sys.modules[MODULE_NAME] = module
    return module
