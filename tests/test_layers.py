"""Dependencies among codeact's modules point one way: no import cycle, counting imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import codeact

SOURCE = Path(codeact.__file__).parent


def _module_names() -> dict[str, Path]:
    names = {}
    for path in SOURCE.rglob("*.py"):
        parts = ("codeact", *path.relative_to(SOURCE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The codeact modules `name` imports anywhere in its text (at the top, in functions, under TYPE_CHECKING).
    `from package import module` counts as importing that module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            modules = [f"{origin}.{alias.name}" for alias in node.names if f"{origin}.{alias.name}" in known]
            if len(modules) == len(node.names):
                found.update(modules)
            elif origin in known:
                found.update([origin, *modules])
    found.discard(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycle_among_codeacts_modules() -> None:
    known = _module_names()
    graph = {name: _imports(name, path, known) for name, path in known.items()}
    assert len(graph) > 60 and sum(map(len, graph.values())) > 150  # the scan sees the real package
    cycles = _cycles(graph)
    described = [
        " <-> ".join(group) + ": " + "; ".join(f"{m} -> {sorted(graph[m] & set(group))}" for m in group)
        for group in cycles
    ]
    assert not cycles, "import cycles:\n" + "\n".join(described)


def test_the_scan_finds_a_cycle_made_by_an_import_inside_a_function(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def later():\n    from a import x\n")
    known = {"a": tmp_path / "a.py", "b": tmp_path / "b.py"}
    graph = {name: _imports(name, path, known) for name, path in known.items()}
    assert _cycles(graph) == [["a", "b"]]


def test_lm_and_sandbox_are_built_without_new() -> None:
    for cls in (codeact.LM, codeact.Sandbox):
        assert "__new__" not in vars(cls), f"{cls.__name__} picks its class in __new__"
