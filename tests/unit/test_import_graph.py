"""The toolkit's import arrows point one way: no runtime cycles, and nothing outside `cli` imports `cli`.

Why: the server runs inside allocations and in slim images; the spec, render, Nomad client, probe
and autoscale code are a library. If any of them reached up into the typer CLI, the library would
drag the CLI (and its import-time command registration) along, and a cycle makes import order
matter. The graph is built from the source with `ast` (every import statement, function-level
ones included, since those run too), so it cannot be fooled by what a test happens to import.
Imports under `if TYPE_CHECKING:` never run and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nomad_triton

ROOT = Path(nomad_triton.__file__).parent
PACKAGE = "nomad_triton"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node that can run: the whole tree minus `if TYPE_CHECKING:` bodies."""
    out: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Toolkit modules that `name` imports at run time (resolved to the most specific module)."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the submodule `pkg.sub` when there is one
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.attr` style: the module part
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE) and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = all_modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _is_package_init_edge(src: str, dst: str) -> bool:
    """A package's __init__ re-exporting its own submodules is how packages work, not a cycle."""
    return dst.startswith(src + ".") or src.startswith(dst + ".")


def runtime_graph() -> dict[str, set[str]]:
    graph = import_graph()
    return {src: {d for d in dsts if not _is_package_init_edge(src, d)} for src, dsts in graph.items()}


def test_the_graph_sees_known_edges_including_function_level_imports() -> None:
    graph = import_graph()
    assert "nomad_triton.server.command" in graph["nomad_triton.cli.serve"]
    assert "nomad_triton.server.command" in graph["nomad_triton.server.__main__"]
    # cli.main imports cli.usage inside main(): function-level imports are edges too
    assert "nomad_triton.cli.usage" in graph["nomad_triton.cli.main"]
    assert "nomad_triton.spec.models" in graph["nomad_triton.spec.loader"]


def test_no_runtime_import_cycles() -> None:
    found = cycles(runtime_graph())
    assert found == [], f"import cycles: {found}"


def test_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_nothing_outside_cli_imports_cli() -> None:
    offenders = sorted(
        f"{src} -> {dst}"
        for src, dsts in import_graph().items()
        if not (src == "nomad_triton.cli" or src.startswith("nomad_triton.cli."))
        for dst in dsts
        if dst == "nomad_triton.cli" or dst.startswith("nomad_triton.cli.")
    )
    assert offenders == [], "core modules must not depend on the CLI: " + ", ".join(offenders)


def test_core_packages_are_all_checked() -> None:
    names = set(import_graph())
    for core in ("spec", "render", "nomad", "probe", "autoscale", "server"):
        assert any(n == f"{PACKAGE}.{core}" or n.startswith(f"{PACKAGE}.{core}.") for n in names), core


def test_running_the_server_entry_point_loads_no_cli_module() -> None:
    """The same rule observed at run time: `python -m nomad_triton.server --help` in a fresh interpreter."""
    import subprocess
    import sys

    code = (
        "import runpy, sys\n"
        "sys.argv = ['nomad_triton.server', '--help']\n"
        "try:\n"
        "    runpy.run_module('nomad_triton.server', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "import nomad_triton.spec, nomad_triton.render, nomad_triton.nomad, nomad_triton.probe\n"
        "import nomad_triton.autoscale, nomad_triton.server.command\n"
        "print(sorted(m for m in sys.modules if m == 'nomad_triton.cli' or m.startswith('nomad_triton.cli.')))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Usage" in res.stdout  # the entry point really ran
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout
