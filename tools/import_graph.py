"""The package's import graph, read from the code with ``ast``: cycles, upward imports, imports inside
functions.

    python tools/import_graph.py            # the figures and the offending imports
    python tools/import_graph.py --json     # the same as JSON
    python tools/import_graph.py --list     # also every function-local import

A function-local import is allowed only with a comment on its line that says why (``# lazy:
keeps --help fast``, ``# lazy: ...`` for a slow optional path); optional extras go through
``rnnlab.errors.optional_module``. Their number may not grow past the ceilings in pyproject.toml
(``[tool.rnnlab.import-graph]``); tests/test_layers.py checks both.

Layers, lowest first, are the ones ``lint-imports`` enforces (``[tool.importlinter]`` in
pyproject.toml); a module belongs to the layer of its subpackage. ``rnnlab/__init__.py`` is the
facade above every layer, so an import of ``rnnlab`` itself from a subpackage counts as an upward
import.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from collections import defaultdict
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "rnnlab"

def read_layers(pyproject: Path = ROOT.parent / "pyproject.toml") -> list[tuple[str, ...]]:
    """The floors of the import-linter "layers" contract in pyproject.toml, lowest first; names
    on one floor share it. One declaration: this script measures what lint-imports enforces."""
    contracts = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c["type"] == "layers")
    return [tuple(name.strip().split(".", 1)[1] for name in floor.split("|")) for floor in reversed(layers)]


def read_ceilings(pyproject: Path = ROOT.parent / "pyproject.toml") -> dict[str, int]:
    """The most function-local imports allowed, in all and outside cli/ (``[tool.rnnlab.import-graph]``)."""
    return tomllib.loads(pyproject.read_text())["tool"]["rnnlab"]["import-graph"]


LAYERS = read_layers()
FACADE = len(LAYERS)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "bench":   # rnnlab.bench: the bench's earlier place, above the layers
        return FACADE
    for floor, names in enumerate(LAYERS):
        if parts[1] in names:
            return floor
    return FACADE


class Imports(ast.NodeVisitor):
    """Every import statement with its line and whether it sits inside a function body."""

    def __init__(self, module: str, is_package: bool):
        self.module, self.is_package = module, is_package
        self.depth = 0
        self.found: list[tuple[int, int, list[str], bool]] = []   # (line, last line, imported names, local)

    def visit_FunctionDef(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node):
        self.found.append((node.lineno, node.end_lineno, [a.name for a in node.names], self.depth > 0))

    def visit_ImportFrom(self, node):
        base = node.module or ""
        if node.level:
            pkg = self.module.split(".") if self.is_package else self.module.split(".")[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([base] if base else []))
        self.found.append((node.lineno, node.end_lineno, [f"{base}.{a.name}" for a in node.names] + [base],
                           self.depth > 0))


def resolve(names: list[str], modules: set[str]) -> set[str]:
    """The rnnlab modules an import statement loads: ``from a.b import c`` is ``a.b.c`` when that
    is a module, else ``a.b``."""
    out = set()
    for name in names:
        if name.split(".")[0] != PACKAGE:
            continue
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    if len(out) > 1:   # ``from a.b import c`` also lists ``a.b``: keep it only when no submodule matched
        parents = {m for m in out if any(o != m and o.startswith(m + ".") for o in out)}
        out -= parents
    return out


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def measure(root: Path = ROOT) -> dict:
    files = sorted((root / PACKAGE).rglob("*.py"))
    modules = {module_name(f, root): f for f in files}
    graph: dict[str, set[str]] = defaultdict(set)
    upward, local, unexplained = [], [], []
    for module, path in modules.items():
        visitor = Imports(module, path.name == "__init__.py")
        text = path.read_text()
        visitor.visit(ast.parse(text, str(path)))
        lines = text.splitlines()
        where = path.relative_to(root).as_posix()
        for line, last, names, is_local in visitor.found:
            if is_local:
                local.append(f"{where}:{line} {names[0]}")
                if not re.search(r"#(?!\s*noqa)", lines[last - 1]):
                    unexplained.append(f"{where}:{line} {names[0]}")
            for target in resolve(names, set(modules)):
                if target == module or (target != PACKAGE and module.startswith(target + ".")):
                    continue   # a subpackage's own __init__ is loaded before its modules anyway
                graph[module].add(target)
                if layer_of(target) > layer_of(module):
                    upward.append(f"{where}:{line} {module} -> {target}")
    cycles = strongly_connected(graph)
    package_graph: dict[str, set[str]] = defaultdict(set)
    for src, targets in graph.items():
        for dst in targets:
            a, b = src.split(".")[:2], dst.split(".")[:2]
            if a != b and len(a) == 2 and len(b) == 2:
                package_graph[".".join(a)].add(".".join(b))
    is_cli = lambda s: s.startswith(f"{PACKAGE}/cli/")   # noqa: E731
    return {
        "modules": len(modules),
        "cycles": len(cycles),
        "modules_in_cycles": sum(len(c) for c in cycles),
        "package_cycles": len(strongly_connected(package_graph)),
        "upward_imports": len(upward),
        "function_local_imports": len(local),
        "function_local_imports_outside_cli": sum(not is_cli(s) for s in local),
        "cycle_members": cycles,
        "upward": upward,
        "local": local,
        "local_without_reason": unexplained,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--root", type=Path, default=ROOT, help="the folder that holds rnnlab/")
    parser.add_argument("--list", action="store_true", help="also list every function-local import")
    args = parser.parse_args(argv)
    figures = measure(args.root)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    for key in ("modules", "cycles", "modules_in_cycles", "package_cycles", "upward_imports",
                "function_local_imports", "function_local_imports_outside_cli"):
        print(f"{key:38s} {figures[key]}")
    for edge in figures["local_without_reason"]:
        print("local import without a reason comment:", edge)
    for cycle in figures["cycle_members"]:
        print("cycle:", " ".join(cycle))
    for edge in figures["upward"]:
        print("upward:", edge)
    if args.list:
        for edge in figures["local"]:
            print("local:", edge)
    return 0


if __name__ == "__main__":
    sys.exit(main())
