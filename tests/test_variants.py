"""RoPE variants: built from the math core, equal to transformers' own RoPE for the same parameters, and run by
every engine exactly: each engine's log-probabilities under a variant equal a float reference's under that
variant, not under the others."""

from __future__ import annotations

import math

import pytest
from test_rope_math import hf_config_object
from test_verify import word_tokenizer
from tiny_models import build_model

from yarn_cli.core.rope import variants
from yarn_cli.core.rope.spec import RopeSpec
from yarn_cli.core.verify import diagnosis

torch = pytest.importorskip("torch")
SPEC = RopeSpec(100000.0, 64, 64, 8192, "config", 8192)


@pytest.mark.parametrize("scale, m, beta_fast, beta_slow, truncate", [(2.0, None, 32, 1, True), (4.0, 1.0, 16, 2, True), (8.0, 1.3, 32, 1, False)])
def test_a_yarn_variant_is_what_transformers_computes(scale, m, beta_fast, beta_slow, truncate):
    """transformers' ROPE_INIT_FUNCTIONS["yarn"] for the same block: frequencies and attention factor."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    block = {
        "rope_type": "yarn",
        "rope_theta": 100000.0,
        "factor": scale,
        "original_max_position_embeddings": 8192,
        "beta_fast": beta_fast,
        "beta_slow": beta_slow,
        "truncate": truncate,
        **({"attention_factor": m} if m else {}),
    }
    config = {
        "model_type": "llama",
        "hidden_size": 576,
        "num_attention_heads": 9,
        "head_dim": 64,
        "max_position_embeddings": int(8192 * scale),
        "rope_parameters": block,
    }
    inv_freq, factor = ROPE_INIT_FUNCTIONS["yarn"](hf_config_object(config), device="cpu")
    ours = variants.yarn(SPEC, scale, m, beta_fast=beta_fast, beta_slow=beta_slow, truncate=truncate)
    assert ours.inv_freq == pytest.approx(inv_freq.double().tolist(), rel=1e-6)
    assert ours.attention_factor == pytest.approx(float(factor), rel=1e-6)


def test_variants_on_baked_weights():
    """On weights that carry m already, cos/sin carry the rest: the baseline divides it out, a YaRN with
    another m multiplies by the ratio."""
    m = 0.1 * math.log(4) + 1
    base = variants.baseline(SPEC, m)
    assert base.attention_factor == pytest.approx(1 / m) and base.effective_m == pytest.approx(1.0)
    other = variants.yarn(SPEC, 4.0, 1.05, baked=m)
    assert other.attention_factor == pytest.approx(1.05 / m) and other.effective_m == pytest.approx(1.05)
    assert other.label == "yarn x4 (m 1.0500)" and base.kind == "none"
    with pytest.raises(Exception, match="positive finite"):
        variants.yarn(SPEC, float("nan"))


def _three(spec, baked=None):
    """The declared scaling, the baseline and a YaRN with another attention factor (m = 1)."""
    declared = variants.declared(spec, baked)
    return [declared, variants.baseline(spec, baked), variants.yarn(spec, declared.factor, 1.0, baked=baked, name="yarn-m1")]


def _held_to_its_own(engine, reference, chosen, ids, max_abs: float | None):
    """Each variant on the engine is nearest the reference's same variant (projection, as parity judges), and
    within ``max_abs`` of it where the engine computes in float32."""
    refs = {}
    for v in chosen:
        explicit = variants.renamed(v, v.name, kind="custom") if v.kind == "declared" else v
        refs[v.name] = reference.score(explicit, ids, 0).losses
    for v in chosen:
        assert engine.unsupported(v) is None, (v.name, engine.unsupported(v))
        got = engine.score(v, ids, 0).losses
        verdict, closest, _, clear = diagnosis.diagnose(got, {("exact" if k == v.name else k): r for k, r in refs.items()})
        assert (verdict, closest, clear) == ("exact", "exact", True), (engine.name, v.name, closest)
        if max_abs is not None:
            assert max(abs(a - b) for a, b in zip(got, refs[v.name])) < max_abs, (engine.name, v.name)
            others = [sum(abs(a - b) for a, b in zip(got, refs[k])) / len(got) for k in refs if k != v.name]
            assert min(others) > 100 * max_abs, (engine.name, v.name, others)


@pytest.fixture(scope="module")
def tiny_x4(tmp_path_factory):
    from yarn_cli.api import apply_extend, plan_extend

    root = tmp_path_factory.mktemp("variants")
    build_model("llama", seed=3, initializer_range=0.2).save_pretrained(root / "llama")
    apply_extend(plan_extend(root / "llama", root / "llama-x4", scale=4))
    word_tokenizer(root / "llama-x4")
    return root / "llama-x4"


def test_native_and_transformers_run_three_variants(tiny_x4):
    from yarn_cli.native.engine import NativeEngine
    from yarn_cli.runtimes.transformers import TransformersEngine

    native, hf = NativeEngine(tiny_x4, "cpu"), TransformersEngine(tiny_x4, "cpu")
    ids = list(range(1, 128)) * 3  # 381 tokens: past the trained 256
    chosen = _three(native.facts.rope)
    _held_to_its_own(native, hf, chosen, ids, 1e-4)
    _held_to_its_own(hf, native, chosen, ids, 1e-4)


def test_llama_cpp_runs_three_variants(smollm2_gguf, tmp_path):
    """The real SmolLM2 (Q4_1) extended x2: llama.cpp's parametric RoPE (context parameters, and the attention
    factor through its metadata key) against our float32 forward pass over the same dequantized weights."""
    pytest.importorskip("llama_cpp")
    from yarn_cli.api import apply_extend, plan_extend
    from yarn_cli.native.engine import NativeEngine
    from yarn_cli.runtimes.llamacpp import LlamaCppEngine
    from yarn_cli.usecases.verify.protocol import load_text

    out = tmp_path / "smol-x2.gguf"
    apply_extend(plan_extend(smollm2_gguf, out, scale=2))
    engine = LlamaCppEngine(out, "cpu")
    try:
        reference = NativeEngine(out, "cpu")
        ids = (engine.tokenizer.bos + engine.tokenizer.encode(load_text(None)))[:1023]
        engine.reserve(len(ids))
        chosen = _three(engine.facts.rope) + [variants.yarn(engine.facts.rope, 2.0, 1.2, name="yarn-m1.2")]
        _held_to_its_own(engine, reference, chosen, ids, None)  # quantized: judged by projection, as parity is
        assert "frequency table" in engine.unsupported(variants.renamed(chosen[0], "table", kind="custom"))
        assert "truncate" in engine.unsupported(variants.yarn(engine.facts.rope, 2.0, truncate=False))
    finally:
        engine.close()


def test_an_engine_refuses_a_variant_it_cannot_run(tiny_x4, capsys):
    from yarn_cli.native.engine import NativeEngine
    from yarn_cli.usecases.verify import protocol

    engine = NativeEngine(tiny_x4, "cpu")
    wrong = variants.RopeVariant("short", "custom", (1.0,) * 3, 1.0, 10000.0)
    with pytest.raises(Exception, match="cannot run variant 'short'"):
        protocol.prepare(engine, protocol.VerifyOptions(lengths=[300], parity=False), [wrong])
