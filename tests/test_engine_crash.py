"""An engine whose native code crashes (SIGSEGV) no longer kills yarn_cli without a word: it runs in a child
process, the run keeps what it measured before, and the verdict names the engine, the signal, the likely cause and
the fix. The crash is real: a read of address 0 in C, in the child, as llama.cpp's AMX path crashes."""

from __future__ import annotations

import json
import multiprocessing

import pytest
from test_cli_inspect import run
from tiny_models import build_model

from yarn_cli.runtimes import base

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_x2(tmp_path_factory):
    from test_verify import word_tokenizer

    from yarn_cli.api import apply_extend, plan_extend

    root = tmp_path_factory.mktemp("crash")
    build_model("llama", seed=4).save_pretrained(root / "llama")
    word_tokenizer(root / "llama")
    apply_extend(plan_extend(root / "llama", root / "x2", scale=2))
    word_tokenizer(root / "x2")
    return root / "x2"


def crash_as(monkeypatch, engine: str, variant: str) -> None:
    monkeypatch.setitem(base.ENGINES, engine, ("crashing_engine", "CrashingEngine"))
    monkeypatch.setenv("YARN_CLI_TEST_CRASH_ON", variant)


def verify(model, engine, capsys, *extra):
    args = ["verify", str(model), "--engine", engine, "--lengths", "300", "--depths", "0.5", "--tasks", "passkey", "--json", *extra]
    code, out, err = run(args, capsys)
    return code, (json.loads(out) if out.strip() else None), err


def test_a_crash_keeps_the_results_before_it_and_says_what_happened(tiny_x2, monkeypatch, capsys):
    crash_as(monkeypatch, "native", "baseline")
    code, report, err = verify(tiny_x2, "native", capsys, "--no-parity")
    assert code == 8, err
    # the extended variant ran before the crash, and its cell is in the report
    assert [c["variant"] for c in report["cells"]] == ["extended"] and report["accuracy"]["extended"]["300"] in (0.0, 1.0)
    reason = report["verdict"]["reason"]
    assert not report["verdict"]["ok"] and report["engine_crash"] == reason
    assert reason.startswith("the native engine crashed (SIGSEGV) while generating after") and "(baseline)" in reason
    assert not multiprocessing.active_children()  # the dead engine's process is gone, and no other is left


@pytest.mark.parametrize("amx", [True, False], ids=["amx-cpu", "other-cpu"])
def test_a_llama_cpp_crash_names_the_likely_build_problem_and_the_fix(tiny_x2, monkeypatch, capsys, amx):
    """As on an AMX Xeon with a -march=native build: the first forward pass (parity) dies. The AMX cause is named
    only where the CPU has AMX; the portable rebuild is the fix either way."""
    from yarn_cli.runtimes import isolated

    monkeypatch.setattr(isolated, "_cpu_has_amx", lambda: amx)
    crash_as(monkeypatch, "llama.cpp", "extended")
    code, report, err = verify(tiny_x2, "llama.cpp", capsys)
    assert code == 8, err
    reason = report["verdict"]["reason"]
    assert "the llama.cpp engine crashed (SIGSEGV) while scoring" in reason
    assert ("AMX" in reason) == amx and "-DGGML_NATIVE=OFF" in reason and "install_llama_cpp.sh" in reason
    assert report["cells"] == [] and report["parity"] is None
    assert not multiprocessing.active_children()


def test_an_error_in_the_child_engine_stays_one_line(tiny_x2, monkeypatch, capsys, tmp_path):
    """The child's own refusals (a YarnError) come back as the same one-line error, not as a crash."""
    monkeypatch.setitem(base.ENGINES, "native", ("crashing_engine", "CrashingEngine"))
    (tmp_path / "empty").mkdir()
    code, report, err = verify(tmp_path / "empty", "native", capsys)
    assert code in (2, 3, 4) and report is None and err.count("\n") == 1 and "Traceback" not in err, err
    assert not multiprocessing.active_children()


def test_cuda_on_a_llama_cpp_build_without_gpu_offload_is_one_line(smollm2_gguf, monkeypatch, capsys, tmp_path):
    """pip's default llama-cpp-python has no GPU backend: asked for cuda, it would run on the CPU under a cuda label.
    This machine's build is such a build; with torch told a GPU is there, verify refuses in one line and writes nothing."""
    llama_cpp = pytest.importorskip("llama_cpp")
    assert not llama_cpp.llama_supports_gpu_offload()
    monkeypatch.setattr(base, "pick_device", lambda requested: "cuda")
    report = tmp_path / "report.html"
    code, _, err = run(["verify", str(smollm2_gguf), "--engine", "llama.cpp", "--device", "cuda", "--report", str(report)], capsys)
    assert code == 2 and "built without GPU offload" in err and len(err.strip().splitlines()) == 1, err
    assert not report.exists()
