"""The wheel lists its packages explicitly (templates/ is mapped in as nomad_triton.templates), so a
new subpackage that is not listed would import fine from the source tree and break in the image.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "nomad_triton").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert "nomad_triton.templates" in listed and (ROOT / "templates" / "triton.nomad.hcl.j2").is_file()


def test_toolkit_core_never_imports_devcluster() -> None:
    # devcluster is a test/demo substrate; the toolkit must work against a real Nomad without it.
    # Only its own CLI group (`nomad-triton dev`) may reach into it.
    import ast

    offenders = []
    for path in (ROOT / "nomad_triton").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("nomad_triton/devcluster/") or rel == "nomad_triton/cli/dev.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{rel}: {n}" for n in names if n.startswith("nomad_triton.devcluster")]
    assert offenders == []
