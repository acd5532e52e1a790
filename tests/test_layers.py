"""The package's layers import only downward, and core stays pure (no printing, no exits)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "yarn_cli"
# A module may import its own layer and the ones with a smaller rank, never a larger one.
RANK = {
    "errors": 0,
    "core": 1,
    "architectures": 1,
    "io": 2,
    "native": 3,
    "runtimes": 3,
    "training": 3,
    "report": 3,
    "usecases": 4,
    "api": 5,
    "lm_eval": 6,
    "cli": 6,
}


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


def test_every_flag_default_is_its_options_objects():
    """One home per default: each verb's flags take their defaults from the verb's options object, so the CLI, the
    Python API and the use cases cannot drift apart."""
    import typer.main

    from yarn_cli.cli.app import app
    from yarn_cli.core.extend.options import EXTEND
    from yarn_cli.core.finetune.options import FINETUNE
    from yarn_cli.core.inspect.options import INSPECT
    from yarn_cli.core.tune.options import TUNE
    from yarn_cli.core.verify.options import VERIFY

    homes = {
        "inspect": [INSPECT],
        "extend": [EXTEND],
        "verify": [VERIFY, VERIFY.engine_options],
        "tune": [TUNE, TUNE.engine_options],
        "finetune": [FINETUNE, FINETUNE.recipe],
    }
    command = typer.main.get_command(app)
    checked = 0
    for verb, objects in homes.items():
        for param in command.commands[verb].params:
            if param.param_type_name != "option" or param.name in ("as_json", "out", "dry_run", "copy", "workers"):
                continue
            home = next((o for o in objects if hasattr(o, param.name)), None)
            assert home is not None, f"yarn {verb} --{param.name}: no field of that name in its options object"
            expected = getattr(home, param.name)
            expected = (expected or None) if param.name in ("seq_len", "grad_accum") else expected  # 0 there means "derived"
            if isinstance(expected, tuple) and not expected:
                expected = None
            assert param.default == expected, f"yarn {verb} --{param.name}: flag default {param.default!r}, options {expected!r}"
            checked += 1
    assert checked > 60


def test_known_default_literals_are_declared_once():
    """The literals the issue tracker found repeated (the betas 32/1, RULER's 85.6, the depths) now have one home."""
    found: dict[float | str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and type(node.value) in (float, str) and node.value in (32.0, 85.6, "0.1,0.5,0.9"):
                found.setdefault(node.value, []).append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == {32.0: ["core/rope/scalars.py:10"], 85.6: ["core/verify/ruler/__init__.py:13"]}, found
