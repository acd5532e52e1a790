"""Parity: each engine is named `exact` on a correct YaRN, and injected faults are named for what they are."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_inspect import run
from test_verify import word_tokenizer
from tiny_models import build_model

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def words(tmp_path_factory) -> Path:
    """Text the word-level tiny tokenizer knows, so the parity sequence is not one repeated unknown token."""
    path = tmp_path_factory.mktemp("text") / "words.txt"
    rng = random.Random(0)
    path.write_text(" ".join(f"w{rng.randrange(128)}" for _ in range(4000)))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny plain models (weights large enough that log-probabilities depend on position) and their YaRN x4."""
    root = tmp_path_factory.mktemp("parity")
    folders = {}
    for model_type in ("llama", "qwen2", "qwen3"):
        plain = root / model_type
        build_model(model_type, seed=3, initializer_range=0.2).save_pretrained(plain)
        word_tokenizer(plain)
        folders[model_type] = plain
        folders[model_type + "-x4"] = root / f"{model_type}-x4"
        assert _extend(plain, folders[model_type + "-x4"]) == 0
    folders["llama-baked"] = root / "llama-baked"
    assert _extend(folders["llama"], folders["llama-baked"], bake=True) == 0
    return folders


def _extend(source: Path, out: Path, bake: bool = False) -> int:
    from yarn_cli.api import apply_extend, plan_extend

    apply_extend(plan_extend(source, out, scale=4, bake_temperature=bake))
    return 0


def parity_run(folder: Path, words: Path, engine: str = "native", **options):
    from yarn_cli.api import prepare_verify

    return prepare_verify(folder, engine=engine, device="cpu", parity_only=True, text=words, **options)


# --- the math: hypotheses and the diagnosis ---------------------------------------------------------------


def test_hypotheses_of_a_yarn_spec_and_of_a_baked_one():
    from yarn_cli.core.rope import frequencies as rope
    from yarn_cli.core.rope.spec import RopeSpec, Scaling
    from yarn_cli.core.verify import diagnosis as parity

    scaling = Scaling("yarn", 4.0, 4096, {}, "rope_parameters")
    spec = RopeSpec(10000.0, 128, 128, 4096, "config", 16384, scaling)
    found = {h.name: h for h in parity.hypotheses(spec, None, 6144)}
    assert list(found) == ["exact", "no-scaling", "no-attention-factor", "attention-factor-twice", "truncate-flipped", "linear"]
    m = rope.yarn_attention_factor(4.0)
    assert found["exact"].attention_factor == pytest.approx(m) and found["attention-factor-twice"].attention_factor == pytest.approx(m * m)
    assert found["no-scaling"].inv_freq == rope.inv_freq_values(10000.0, 128) and found["no-scaling"].attention_factor == 1.0
    assert found["linear"].inv_freq == pytest.approx([t / 4 for t in rope.inv_freq_values(10000.0, 128)])
    # Llama-2's bounds 20 and 46 are whole already; truncate changes nothing there only if corr dims are integers
    assert found["truncate-flipped"].inv_freq != found["exact"].inv_freq

    baked = Scaling("yarn", 4.0, 4096, {"attention_factor": 1.0}, "rope_parameters")
    names = {h.name: h for h in parity.hypotheses(RopeSpec(10000.0, 128, 128, 4096, "config", 16384, baked), m, 6144)}
    assert "no-attention-factor" not in names  # the same RoPE as the declared one: nothing to tell apart
    assert names["attention-factor-twice"].attention_factor == pytest.approx(m)  # one more m on top of the baked one
    assert [h.name for h in parity.hypotheses(RopeSpec(10000.0, 128, 128, 4096, "config", 4096), None, 100)] == ["exact"]


def test_diagnosis_is_relative():
    from yarn_cli.core.verify.diagnosis import parity

    n, rng = 400, random.Random(0)
    noise = [rng.gauss(0.0, 0.05) for _ in range(n)]  # quantization-like: large, and aligned with no fault

    def run(engine, **references):
        return parity(
            "e", "r", "yarn x4", [e + z for e, z in zip(engine, noise)], {name.replace("_", "-"): values for name, values in references.items()}
        )

    exact, scaled, linear = [0.0] * n, [0.3] * n, [1.0] * n
    result = run(exact, exact=exact, no_scaling=scaled, linear=linear)
    assert (result.diagnosis, result.clear) == ("exact", True) and "as declared" in result.line
    # a fault only 0.08 away is still resolved: the noise averages out of the projection
    assert run(exact, exact=exact, no_scaling=[0.08] * n).diagnosis == "exact"
    result = run([0.15] * n, exact=exact, no_scaling=scaled)  # halfway: neither
    assert (result.diagnosis, result.clear) == ("other", False) and "no known variant" in result.line
    result = run(scaled, exact=exact, no_scaling=scaled, linear=linear)
    assert result.diagnosis == "no-scaling" and 'matches "no-scaling" (YaRN ignored)' in result.line
    result = run(scaled, exact=exact, truncate_flipped=scaled)  # a fault without a diagnosis of its own
    assert (result.diagnosis, result.closest, result.clear) == ("other", "truncate-flipped", True)
    # a hypothesis lost in the noise around the declared one is set aside, and the declared one wins the tie
    result = run([0.001] * n, exact=exact, truncate_flipped=[0.001] * n, no_scaling=scaled)
    assert (result.diagnosis, result.indistinct) == ("exact", ["truncate-flipped"])
    result = run(exact, exact=exact, linear=[0.001] * n)  # nothing can be told apart
    assert result.diagnosis == "other" and "cannot be judged" in result.line
    assert parity("e", "r", "none", [0.0] * n, {"exact": exact}).diagnosis == "exact"  # nothing else declared


# --- every engine is exact on a correct checkpoint ---------------------------------------------------------


@pytest.mark.parametrize("model_type", ["llama-x4", "qwen2-x4", "qwen3-x4", "llama-baked"])
@pytest.mark.parametrize("engine", ["native", "transformers"])
def test_engines_apply_yarn_exactly(tiny, words, model_type, engine):
    report = parity_run(tiny[model_type], words, engine).run().to_json()
    parity = report["parity"]
    assert parity["diagnosis"] == "exact", parity["line"]
    assert parity["max_abs_diff"] < 1e-4 and parity["positions"] == 383  # 1.5 x 256: BOS and 383 tokens, each scored
    # never the engine's own forward pass: native is held against transformers, transformers against native
    assert parity["reference"] == {"native": "transformers", "transformers": "native"}[engine]
    assert report["verdict"]["ok"] and "lengths" not in report
    faults = {name: diff for name, diff in parity["hypotheses_mean"].items() if name != "exact"}
    assert min(faults.values()) > 20 * parity["mean_abs_diff"]  # every fault is told apart clearly


def test_llama_cpp_applies_yarn_on_the_quantized_smollm2(smollm2_gguf, tmp_path, capsys):
    pytest.importorskip("llama_cpp")
    out = tmp_path / "smol-x2.gguf"
    assert run(["extend", str(smollm2_gguf), "-s", "2", "-o", str(out)], capsys)[0] == 0
    code, stdout, _ = run(["verify", str(out), "--engine", "llama.cpp", "--parity-only", "--json"], capsys)
    parity = json.loads(stdout)["parity"]
    assert code == 0 and parity["diagnosis"] == "exact", parity["line"]
    assert parity["reference"] == "native" and parity["positions"] == 1023
    # Q4_1 weights: llama.cpp's own arithmetic is far from float32, so the verdict rests on the gap
    assert parity["max_abs_diff"] > 1e-3 and "as declared" in parity["line"]


# --- injected faults are named -----------------------------------------------------------------------------


def _rope(engine, inv_freq, factor):
    """Inject a fault into the native engine's declared RoPE (the variant parity measures it under)."""
    from yarn_cli.core.rope import variants
    from yarn_cli.native.model import Rope

    model = engine.model(variants.declared(engine.facts.rope, engine.facts.baked_attention_factor))
    model.rope = Rope(torch.tensor(inv_freq, dtype=torch.float32), factor)  # the setter drops the cached cos/sin


def test_native_engine_faults_are_named(tiny, words):
    from yarn_cli.core.rope import analysis
    from yarn_cli.core.rope import frequencies as rope

    prepared = parity_run(tiny["llama-x4"], words)
    engine, spec = prepared.engine, prepared.engine.facts.rope
    declared = analysis.existing_frequencies(spec)
    faults = {
        "no-attention-factor": (declared.inv_freq_values, 1.0),
        "attention-factor-twice": (declared.inv_freq_values, declared.attention_factor**2),
        "linear": ([t / 4 for t in rope.inv_freq_values(spec.base, spec.rotary_dim)], 1.0),
        "no-scaling": (rope.inv_freq_values(spec.base, spec.rotary_dim), 1.0),
    }
    for name, (inv_freq, factor) in faults.items():
        _rope(engine, inv_freq, factor)
        report = prepared.run().to_json()
        assert report["parity"]["diagnosis"] == name, report["parity"]["line"]
        assert not report["verdict"]["ok"] and f'matches "{name}"' in report["verdict"]["reason"]


def test_transformers_engine_applying_m_twice_is_named(tiny, words):
    prepared = parity_run(tiny["qwen3-x4"], words, "transformers")
    rotary = prepared.engine._slots[0][2]  # the module transformers built from the config: the declared variant
    rotary.attention_scaling = rotary.attention_scaling**2
    parity = prepared.run().to_json()["parity"]
    assert parity["diagnosis"] == "attention-factor-twice", parity["line"]


def test_baked_checkpoint_in_an_engine_that_adds_m_again(tiny, words):
    from yarn_cli.core.rope import frequencies as rope
    from yarn_cli.core.rope import variants

    prepared = parity_run(tiny["llama-baked"], words)
    inv_freq = variants.declared(prepared.engine.facts.rope).inv_freq
    _rope(prepared.engine, inv_freq, rope.yarn_attention_factor(4.0))
    parity = prepared.run().to_json()["parity"]
    assert parity["diagnosis"] == "attention-factor-twice", parity["line"]


def test_llama_cpp_with_scaling_forced_off_is_named(smollm2_gguf, tmp_path, capsys, monkeypatch):
    pytest.importorskip("llama_cpp")
    from yarn_cli.api import prepare_verify
    from yarn_cli.runtimes.llamacpp import LlamaCppEngine

    monkeypatch.setattr(LlamaCppEngine, "isolated", False)  # in this process, where the fault can be injected
    out = tmp_path / "smol-x2.gguf"
    assert run(["extend", str(smollm2_gguf), "-s", "2", "-o", str(out)], capsys)[0] == 0
    prepared = prepare_verify(out, engine="llama.cpp", device="cpu", parity_only=True)
    engine = prepared.engine
    ignore_metadata = {"rope_scaling_type": 0, "rope_freq_scale": 1.0}  # LLAMA_ROPE_SCALING_TYPE_NONE: the metadata ignored
    engine._parameters = lambda variant: (ignore_metadata, {})
    parity = prepared.run().to_json()["parity"]
    assert parity["diagnosis"] == "no-scaling", parity["line"]


LEGACY = os.environ.get("YARN_CLI_TRANSFORMERS4")
OLD_READER = """
import json, sys, torch
from transformers import AutoModelForCausalLM
ids = json.load(open(sys.argv[2]))
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32).eval()
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0, :-1].float()
nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
json.dump(nll.double().tolist(), open(sys.argv[3], "w"))
"""


@pytest.mark.skipif(not LEGACY or not Path(LEGACY).is_dir(), reason="transformers 4.x side install not present")
def test_an_old_reader_of_a_5x_only_block_is_named_no_scaling(tiny, words, tmp_path):
    """transformers 4.57 reads `rope_scaling`; a config that declares YaRN only in 5.x's `rope_parameters`
    loads there without error and runs plain RoPE. Parity, fed 4.57's own log-probabilities, says so."""
    folder = tmp_path / "five-only"
    folder.mkdir()
    for item in tiny["llama-x4"].iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config.pop("rope_scaling", None)
    (folder / "config.json").write_text(json.dumps(config))
    assert config["rope_parameters"]["rope_type"] == "yarn"

    prepared = parity_run(folder, words)
    ids_file, out = tmp_path / "ids.json", tmp_path / "nll.json"
    ids_file.write_text(json.dumps(prepared.prepared.parity.ids))
    env = {**os.environ, "PYTHONPATH": str(Path(LEGACY).resolve())}
    result = subprocess.run([sys.executable, "-c", OLD_READER, str(folder), str(ids_file), str(out)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    old = json.loads(out.read_text())
    from yarn_cli.runtimes.base import Scored

    engine = prepared.engine
    engine.name, engine.score = "transformers 4.57", lambda variant, ids, score_from: Scored(old, len(ids), 0.0)
    parity = prepared.run().to_json()["parity"]
    assert parity["diagnosis"] == "no-scaling" and math.isfinite(parity["max_abs_diff"]), parity["line"]
    assert 'transformers 4.57 matches "no-scaling" (YaRN ignored), not the declared yarn x4' in parity["line"]


# --- the command line ----------------------------------------------------------------------------------------


def test_verify_runs_parity_first_and_no_parity_skips_it(tiny, words, capsys):
    args = ["verify", str(tiny["llama-x4"]), "--lengths", "300", "--depths", "0.5", "--ppl-windows", "1", "--text", str(words)]
    code, out, _ = run([*args, "--json"], capsys)
    report = json.loads(out)
    assert report["parity"]["diagnosis"] == "exact" and report["lengths"] == [300]
    code, out, _ = run([*args, "--no-parity", "--json"], capsys)
    assert json.loads(out)["parity"] is None
    code, out, _ = run(["verify", str(tiny["llama-x4"]), "--parity-only", "--text", str(words)], capsys)
    assert code == 0 and "parity: native applies yarn x4 exactly" in out and "passkey" not in out


def test_parity_on_a_plain_checkpoint_and_bad_lengths(tiny, words, capsys):
    code, out, _ = run(["verify", str(tiny["llama"]), "--parity-only", "--text", str(words), "--json"], capsys)
    parity = json.loads(out)["parity"]
    assert code == 0 and list(parity["hypotheses"]) == ["exact"] and parity["positions"] == 255
    code, _, err = run(["verify", str(tiny["llama"]), "--parity-only", "--parity-length", "1"], capsys)
    assert code == 2 and "--parity-length" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["verify", str(tiny["llama"]), "--parity-only", "--tensor-parallel-size", "2"], capsys)
    assert code == 2 and "only --engine vllm" in err


# --- the reference is never the engine's own forward pass ---------------------------------------------------


def test_without_an_independent_reference_parity_is_not_checked(tiny, words, capsys, monkeypatch):
    """The native engine's only independent reference is transformers: without it, parity says "not checked"
    (and --parity-only refuses), never "exact" against its own forward pass."""
    import builtins

    real_import = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    args = ["verify", str(tiny["llama-x4"]), "--text", str(words)]
    code, out, _ = run([*args, "--lengths", "300", "--depths", "0.5", "--ppl-windows", "1", "--json"], capsys)
    report = json.loads(out)
    assert report["parity"] is None
    assert any(n.startswith("parity not checked: no independent reference") for n in report["notes"]), report["notes"]
    code, _, err = run([*args, "--parity-only"], capsys)
    assert code != 0 and "--parity-only" in err and "own forward pass" in err and len(err.strip().splitlines()) == 1


from yarn_cli.usecases.verify.parity_check import SHARED_FORWARD  # noqa: E402


def _gemma3_multimodal(folder: Path) -> None:
    """A tiny Gemma 3 with its vision tower: transformers loads it as Gemma3ForConditionalGeneration, whose
    rotary module sits in the language model, not at ``model.rotary_emb``."""
    from tiny_models import TINY
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text = {k: v for k, v in TINY["gemma3_text"].items()}
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14)
    config = Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=4, image_token_index=127, boi_token_index=125, eoi_token_index=126
    )
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    model.save_pretrained(folder)
    word_tokenizer(folder)


@pytest.mark.parametrize("family", ["gpt_neox", "gemma3"])
def test_transformers_engine_finds_the_rotary_module_of_every_family(family, words, tmp_path):
    """GPT-NeoX keeps it at gpt_neox.rotary_emb, multimodal Gemma 3 in its language model: both verify exactly,
    and a fault injected into that module is named. The native pass runs Gemma 3's language model, so it is that
    family's reference; GPT-NeoX's shares transformers' forward pass but not its RoPE."""
    plain, extended = tmp_path / family, tmp_path / f"{family}-x4"
    if family == "gemma3":
        _gemma3_multimodal(plain)
    else:
        build_model(family, seed=3, initializer_range=0.2).save_pretrained(plain)
        word_tokenizer(plain)
    assert _extend(plain, extended) == 0
    word_tokenizer(extended)
    prepared = parity_run(extended, words, "transformers")
    parity = prepared.run().to_json()["parity"]
    assert parity["diagnosis"] == "exact" and parity["max_abs_diff"] < 1e-4, parity["line"]
    assert parity["reference"] == ("native" if family == "gemma3" else SHARED_FORWARD)
    prepared = parity_run(extended, words, "transformers")
    module = prepared.engine._slots[0][2]
    name = "full_attention_attention_scaling" if hasattr(module, "full_attention_attention_scaling") else "attention_scaling"
    setattr(module, name, 1.0)
    parity = prepared.run().to_json()["parity"]
    assert parity["diagnosis"] == "no-attention-factor", parity["line"]
