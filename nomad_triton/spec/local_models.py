"""`validate`'s look into a local model repository: every model the spec names must load in `serve`.

Only when the repository is a path on this machine (raw_exec); a path inside an image, a host
volume or an artifact is checked where it lives (serve refuses a broken model at start). GPU
presence is not checked here: the deploy target, not this machine, has the GPUs.
"""

from __future__ import annotations

from pathlib import Path

from nomad_triton.spec import DeploymentSpec


def check_local_models(spec: DeploymentSpec) -> list[str]:
    """One line per named model that `serve` would refuse (empty when all load or not local)."""
    repo = spec.model_repository
    if repo.source != "path" or spec.driver.type != "raw_exec" or not Path(repo.path or "").is_dir():
        return []
    from nomad_triton.server.model_repo import RepositoryError
    from nomad_triton.server.repository import load_model

    root = Path(repo.path or "")
    problems: list[str] = []
    for i, name in enumerate(repo.models):
        folder = root / name
        where = f"model_repository.models.{i}"
        if not folder.is_dir():
            problems.append(f"{where}: no model folder {folder}")
            continue
        try:
            model = load_model(folder, allow_cpu_fallback=True)
        except RepositoryError as exc:
            problems += [f"{where}: {line}" for line in exc.lines]
            continue
        if model.spec.name != name:
            problems.append(f"{where}: {model.where} names the model {model.spec.name!r}, not {name!r}")
    return problems
