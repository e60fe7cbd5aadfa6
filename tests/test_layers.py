"""The architecture, checked: each package imports only the packages below it, and no module imports itself
back through others. Read from the source with `ast`, so a function-level import counts as much as a top one.

Layers, bottom up (a package may import its own modules and anything in a lower layer):
  rag.config, rag.errors, rag.hostcheck     settings, the error tree, the Host check
  rag.console, rag.ollama, rag.index        the terminal (settings per command, the error line, progress);
                                            the adapters: Ollama, and what ingest writes and serving reads
  ingest                                    folder -> chunks -> index
  rag.answer                                retrieval, prompts, the pipeline
  rag.serve                                 the HTTP service
  rag.eval                                  evaluation runs
  rag.cli, rag.__main__                     entry points
The engine (rag.engine) stands apart: it may use only rag.config and rag.hostcheck, and nothing imports it
but the entry points, tests and benches.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.servers import ROOT

LAYERS = [
    {"rag.config", "rag.errors", "rag.hostcheck"},
    {"rag.console", "rag.ollama", "rag.index"},
    {"ingest"},
    {"rag.answer"},
    {"rag.serve"},
    {"rag.eval"},
    {"rag.cli", "rag.__main__", "rag"},
]
ENGINE_MAY_USE = {"rag.config", "rag.hostcheck", "rag.engine"}


def modules() -> dict[str, Path]:
    found = {}
    for top in ("rag", "ingest"):
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """Our modules that `path` imports, at any depth in the file."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {name for name in out if name.split(".")[0] in ("rag", "ingest") and name in known}


def unit(module: str) -> str:
    """The layer unit a module belongs to: its package (rag.index, ingest, ...) or the module itself."""
    for layer in LAYERS:
        for name in sorted(layer, key=len, reverse=True):
            if module == name or module.startswith(name + "."):
                return name
    return "rag.engine" if module.startswith("rag.engine") else module


def level(module: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit(module) in layer)


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) for name, path in found.items()}


def test_each_package_imports_only_packages_below_it():
    wrong = []
    for module, targets in graph().items():
        for target in targets:
            if unit(module) == unit(target):
                continue
            if module.startswith("rag.engine"):
                if unit(target) not in ENGINE_MAY_USE:
                    wrong.append(f"{module} -> {target} (the engine stands apart)")
            elif target.startswith("rag.engine"):
                if level(module) < len(LAYERS) - 1:
                    wrong.append(f"{module} -> {target} (only entry points start the engine)")
            elif level(target) > level(module) or (level(target) == level(module) < len(LAYERS) - 1):
                wrong.append(f"{module} -> {target} (layer {level(module)} imports layer {level(target)})")
    assert wrong == []


def test_no_module_imports_itself_back():
    edges = graph()
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str], on_path: set[str], done: set[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in on_path:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt], on_path | {nxt}, done)
        done.add(node)

    done: set[str] = set()
    for start in sorted(edges):
        if start not in done:
            visit(start, [start], {start}, done)
    assert cycles == []
