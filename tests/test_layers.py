"""The package's layers import only downward, and core stays pure (no printing, no exits)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "yarn_cli"
# A module may import its own layer and the ones with a smaller rank, never a larger one.
RANK = {"errors": 0, "core": 1, "architectures": 1, "io": 2, "native": 3, "runtimes": 3, "training": 3, "usecases": 4, "api": 5, "lm_eval": 6,
        "cli": 6}


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):  # function-local imports count too: they are cycles all the same
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("yarn_cli."):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("yarn_cli.")]
    return found


def test_layers_import_only_downward():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        layer = path.relative_to(PACKAGE).with_suffix("").parts[0]
        if layer not in RANK:
            continue
        for line, module in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            target = module.split(".")[1]
            if RANK.get(target, -1) > RANK[layer]:
                offenders.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert not offenders, offenders


def test_core_never_prints_or_exits():
    offenders = []
    for path in (PACKAGE / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name in ("print", "sys.exit", "exit", "quit") or name.startswith(("typer.", "rich.")):
                    offenders.append(f"{path.name}:{node.lineno} {name}")
    assert not offenders, offenders


def test_no_file_over_400_lines_and_no_function_over_60():
    long_files, long_functions = [], []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 400:
            long_files.append(path.name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long_functions.append(f"{path.name}:{node.name}")
    assert not long_files and not long_functions, (long_files, long_functions)
