"""What an install relies on: the pinned llama-cpp-python still has the private API the engine calls, its build is
portable, and the built-in model is refused unless its bytes are the expected ones."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_llama_cpp_python_is_pinned_to_the_version_whose_private_api_the_engine_uses():
    llama_cpp = pytest.importorskip("llama_cpp")
    pins = set(re.findall(r'"llama-cpp-python==([0-9.]+)"', (ROOT / "pyproject.toml").read_text()))
    script = re.search(r"^version=([0-9.]+)$", (ROOT / "scripts" / "install_llama_cpp.sh").read_text(), re.M).group(1)
    assert pins == {script} == {llama_cpp.__version__}
    # runtimes/llamacpp.py reaches past the public API for prefix reuse and per-position logits
    assert hasattr(llama_cpp.Llama, "_ctx") or "_ctx" in llama_cpp.Llama.__init__.__code__.co_names
    internals = llama_cpp._internals
    for cls, names in {
        internals.LlamaContext: ("kv_cache_seq_rm", "decode", "get_logits_ith"),
        internals.LlamaBatch: ("set_batch",),
        internals.LlamaModel: ("add_bos_token", "token_bos"),
    }.items():
        missing = [name for name in names if not hasattr(cls, name)]
        assert not missing, f"llama_cpp {llama_cpp.__version__}: {cls.__name__} lacks {missing}"
    engine = (ROOT / "yarn_cli" / "runtimes" / "llamacpp.py").read_text()
    used = set(re.findall(r"\b(?:llm|model)\._(ctx|batch|model)\b", engine))
    assert used == {"ctx", "batch", "model"}, "the engine's private attributes changed: update this test's list"
    for attribute in ("_ctx", "_batch", "_model"):
        assert attribute in llama_cpp.Llama.__init__.__code__.co_names, f"Llama no longer sets {attribute}"


def test_the_llama_cpp_build_is_portable():
    """The script never asks for -march=native (ggml's AMX path crashes on quantized weights on AMX Xeons) and
    switches on only the instruction sets the CPU reports."""
    script = (ROOT / "scripts" / "install_llama_cpp.sh").read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert "-DGGML_NATIVE=OFF" in code and "AMX" not in code and "march=native" not in code
    fake = "flags\t\t: fpu sse avx avx2 fma f16c\n"
    result = subprocess.run(
        ["bash", "-c", script.split("tag=$(", 1)[0].replace("/proc/cpuinfo", "/dev/stdin") + 'echo "$args"'],
        input=fake,
        capture_output=True,
        text=True,
        check=True,
    )
    args = result.stdout.split()
    assert {"-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_AVX512=OFF"} <= set(args), args


def test_the_default_model_is_refused_when_its_sha256_differs(tmp_path, monkeypatch, smollm2_gguf):
    """A download whose bytes are not the expected GGUF is refused, and nothing is left in the cache."""
    from yarn_cli.errors import FetchError
    from yarn_cli.io import default_model

    assert default_model.file_sha256(smollm2_gguf) == default_model.SHA256
    monkeypatch.setenv("YARN_CLI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(default_model, "SHA256", "0" * 64)
    with pytest.raises(FetchError, match="sha256"):
        default_model.default_model_path()
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_demo_installs_what_its_parity_check_needs():
    """The demo's verify holds native to transformers on a GGUF, which needs accelerate: the extra must bring it."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    extra = re.search(r"^transformers = \[(.*)\]$", pyproject, re.M).group(1)
    assert "accelerate" in extra
    assert "'.[transformers,plot]'" in (ROOT / "scripts" / "demo.sh").read_text()  # plot: verify --report after the demo
