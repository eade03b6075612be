"""The import graph of ``lzero_ext`` and ``zoo.jericho.priorzero``, read from source: no cycles, and the library
never imports the Jericho zoo.

Every import statement counts, wherever it stands (module level, inside a function, under ``TYPE_CHECKING``): a
lazy import hides a cycle from the interpreter but not from a reader, so it is no way out of one here.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("lzero_ext", "zoo/jericho/priorzero")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[_module_name(path)] = path
    return found


def _imported_names(path: Path, module: str) -> set[str]:
    """Dotted names each import statement of ``path`` reaches, ``from a import b`` giving both ``a.b`` and ``a``."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.update(f"{base}.{alias.name}" for alias in node.names)
            names.add(base)
    return names


def import_graph() -> dict[str, set[str]]:
    """Edges between our own modules: ``a.b.c`` imported (or a name from it) -> edges to ``a.b.c`` and to the
    packages ``a``, ``a.b`` whose ``__init__`` importing it runs (except the importer's own packages, already running)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in _imported_names(path, module):
            parts = name.split(".")
            for end in range(1, len(parts) + 1):
                target = ".".join(parts[:end])
                if target in modules and target != module and not module.startswith(target + "."):
                    targets.add(target)
        graph[module] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted, for the failure message."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_graph_sees_the_modules_and_their_edges():
    graph = import_graph()
    assert "lzero_ext.llm.prior" in graph and "zoo.jericho.priorzero.priorzero_orz_entry" in graph
    assert "lzero_ext.llm.types" in graph["lzero_ext.llm.prior"]
    assert "zoo.jericho.priorzero.priorzero_config" in graph["zoo.jericho.priorzero.priorzero_orz_entry"]


def test_find_cycles_reports_a_function_level_cycle(tmp_path):
    """The checker can fail: two modules importing each other, one of them inside a function."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("from pkg.b import g\n")
    (package / "b.py").write_text("def g():\n    from pkg import a\n    return a\n")
    graph = {name: {t for t in _imported_names(package / f"{name[4:]}.py", name) if t in ("pkg.a", "pkg.b")} - {name}
             for name in ("pkg.a", "pkg.b")}
    assert find_cycles(graph) == [["pkg.a", "pkg.b"]]
    assert find_cycles({"x": {"y"}, "y": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (move the shared piece to a module both can import):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_library_never_imports_zoo():
    modules = _modules()
    offenders = {module: sorted(n for n in _imported_names(path, module) if n == "zoo" or n.startswith("zoo."))
                 for module, path in modules.items() if module.startswith("lzero_ext")}
    offenders = {module: names for module, names in offenders.items() if names}
    assert len([m for m in modules if m.startswith("lzero_ext")]) > 30  # the walk found the library
    assert not offenders, f"lzero_ext must know nothing about the Jericho zoo: {offenders}"
