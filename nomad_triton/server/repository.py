"""Walk a model repository: each folder is a model described by model.toml or Triton's config.pbtxt.

Apart from model_repo.py (the description and the model.toml reader) and triton_config.py (the
config.pbtxt translator) so that both readers sit below this dispatcher and neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

from nomad_triton.server.model_repo import MODEL_FILE, LoadedModel, RepositoryError, load_model_toml
from nomad_triton.server.triton_config import CONFIG_FILE, load_triton_model


def load_model(folder: Path, allow_cpu_fallback: bool = False) -> LoadedModel:
    """Read and validate one model folder; raise RepositoryError naming the file and field."""
    has_toml = (folder / MODEL_FILE).is_file()
    has_pbtxt = (folder / CONFIG_FILE).is_file()
    if has_pbtxt and has_toml:
        raise RepositoryError([f"{folder}: holds both {MODEL_FILE} and {CONFIG_FILE}; keep one of them"])
    if has_pbtxt:
        return load_triton_model(folder, allow_cpu_fallback=allow_cpu_fallback)
    if not has_toml:
        raise RepositoryError([f"{folder}: missing {MODEL_FILE} or {CONFIG_FILE}"])
    return load_model_toml(folder)


def load_repository_partial(
    root: Path, allow_cpu_fallback: bool = False
) -> tuple[list[LoadedModel], dict[str, list[str]]]:
    """Every good model, plus the problems of each broken one keyed by its model (folder) name.

    The partial form serves `--no-exit-on-error`: broken models stay listed (not ready) while the
    rest serve. A missing or empty repository is always fatal.
    """
    if not root.is_dir():
        raise RepositoryError([f"{root}: model repository is not a directory"])
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if not folders:
        raise RepositoryError([f"{root}: no model folders found"])
    models: list[LoadedModel] = []
    broken: dict[str, list[str]] = {}
    for folder in folders:
        try:
            models.append(load_model(folder, allow_cpu_fallback=allow_cpu_fallback))
        except RepositoryError as exc:
            broken[folder.name] = exc.lines
    seen: dict[str, Path] = {}
    for model in list(models):
        other = seen.setdefault(model.spec.name, model.folder)
        if other != model.folder:
            broken[model.folder.name] = [f"{model.where}: name: {model.spec.name!r} already used by {other}"]
            models.remove(model)
    return models, broken


def load_repository(root: Path, allow_cpu_fallback: bool = False) -> list[LoadedModel]:
    """Validate every model folder under `root`; collect all problems before raising any."""
    models, broken = load_repository_partial(root, allow_cpu_fallback=allow_cpu_fallback)
    if broken:
        raise RepositoryError([line for lines in broken.values() for line in lines])
    return models
