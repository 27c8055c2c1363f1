"""Import user code from a model folder under a private module name.

Shared by the model.toml Python entry points (backends.py) and Triton python-backend model.py files
(python_backend.py); its own module so neither backend module imports the other.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def import_from_folder(folder: Path, model_name: str, module: str) -> ModuleType:
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
