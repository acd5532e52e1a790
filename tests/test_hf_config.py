"""Reading RoPE state from config.json: 4.x and 5.x forms, nesting, partial rotary, warnings, refusals."""

from __future__ import annotations

import pytest
from real_configs import DEEPSEEK_V3, GEMMA3_4B, LLAMA2_7B, LLAMA31_8B, MISTRAL_7B, PHI2, QWEN3_8B_YARN

from yarn_cli.core.checkpoint import hf_config, hf_layout
from yarn_cli.errors import FormatError, UnsupportedError


def specs(config, **kw):
    return hf_config.read_rope_specs(config, **kw)


def test_llama2_defaults():
    (spec,), warnings = specs(LLAMA2_7B)
    assert (spec.base, spec.head_dim, spec.rotary_dim, spec.original_context) == (10000.0, 128, 128, 4096)
    assert spec.scaling is None and spec.original_context_source == "max_position_embeddings" and not warnings


def test_partial_rotary_phi2():
    (spec,), _ = specs(PHI2)
    assert (spec.head_dim, spec.rotary_dim) == (80, 32)


def test_gpt_neox_rotary_pct_and_base():
    config = {
        "model_type": "gpt_neox",
        "hidden_size": 512,
        "num_attention_heads": 8,
        "rotary_pct": 0.25,
        "rotary_emb_base": 20000,
        "max_position_embeddings": 2048,
        "num_hidden_layers": 2,
    }
    (spec,), _ = specs(config)
    assert (spec.base, spec.head_dim, spec.rotary_dim) == (20000.0, 64, 16)


def test_deepseek_rotates_only_rope_head_dim():
    (spec,), _ = specs(DEEPSEEK_V3)
    assert (spec.head_dim, spec.rotary_dim, spec.original_context) == (192, 64, 4096)
    dims = hf_layout.model_dims(DEEPSEEK_V3)
    assert dims["attention"].kv_dims == 512 + 64  # MLA caches the latent and the rotary key


def test_qwen3_yarn_original_context():
    (spec,), warnings = specs(QWEN3_8B_YARN)
    assert spec.original_context == 32768 and spec.max_context == 40960
    assert spec.scaling.type == "yarn" and spec.scaling.factor == 4.0
    assert any("!= max_position_embeddings/original" in w for w in warnings)


def test_llama31_is_not_flagged():
    _, warnings = specs(LLAMA31_8B)
    assert warnings == []


def test_gemma3_nested_text_config_has_two_rope_families():
    ropes, _ = specs(GEMMA3_4B)
    assert [r.name for r in ropes] == ["global", "local (sliding window)"]
    assert ropes[0].base == 1e6 and ropes[0].scaling.type == "linear" and ropes[0].scaling.factor == 8.0
    assert ropes[1].base == 1e4 and ropes[1].scaling is None
    assert ropes[0].head_dim == 256


def test_transformers5_nested_rope_parameters():
    config = {
        "model_type": "gemma3_text",
        "hidden_size": 640,
        "head_dim": 256,
        "num_attention_heads": 4,
        "max_position_embeddings": 32768,
        "layer_types": ["sliding_attention", "full_attention"],
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
    }
    ropes, _ = specs(config)
    assert [(r.name, r.base) for r in ropes] == [("global", 1e6), ("local (sliding window)", 1e4)]


def test_rope_parameters_only_warns_about_4x_readers():
    config = {**LLAMA2_7B, "rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0, "original_max_position_embeddings": 4096}}
    config["max_position_embeddings"] = 16384
    (spec,), warnings = specs(config)
    assert spec.scaling.source == "rope_parameters" and spec.original_context == 4096
    assert any("only in the 5.x rope_parameters" in w and "rope_theta 10000" in w for w in warnings)


def test_disagreeing_blocks_warn():
    config = {
        **LLAMA2_7B,
        "max_position_embeddings": 16384,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
        "rope_parameters": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 4096},
    }
    (spec,), warnings = specs(config)
    assert spec.scaling.factor == 4.0  # rope_scaling wins, as in transformers 5.x
    assert any("disagree" in w for w in warnings)


def test_missing_original_warns_and_old_type_key_read():
    config = {**LLAMA2_7B, "rope_scaling": {"type": "yarn", "factor": 2.0}}
    (spec,), warnings = specs(config)
    assert spec.scaling.type == "yarn"
    assert any("no original_max_position_embeddings" in w for w in warnings)


def test_su_is_longrope():
    config = {**LLAMA2_7B, "rope_scaling": {"type": "su", "short_factor": [1] * 64, "long_factor": [2] * 64}}
    (spec,), _ = specs(config)
    assert spec.scaling.type == "longrope"


def test_mistral_hint_and_override():
    _, warnings = specs(MISTRAL_7B)
    assert any("--original-context 8192" in w for w in warnings)
    (spec,), warnings = specs(MISTRAL_7B, original_context_override=8192)
    assert spec.original_context == 8192 and spec.original_context_source == "--original-context" and not warnings


@pytest.mark.parametrize("model_type", ["gpt2", "bloom", "mpt", "opt"])
def test_non_rope_models_refused(model_type):
    with pytest.raises(UnsupportedError, match="does not use RoPE"):
        specs({"model_type": model_type, "n_embd": 64, "n_head": 4, "n_positions": 1024})


def test_alibi_falcon_refused():
    with pytest.raises(UnsupportedError, match="ALiBi"):
        specs({"model_type": "falcon", "alibi": True, "hidden_size": 64, "num_attention_heads": 4})


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"rope_theta": "big"}, "rope_theta"),
        ({"max_position_embeddings": -5}, "max_position_embeddings"),
        ({"partial_rotary_factor": 2}, "partial_rotary_factor"),
        ({"rope_scaling": {"rope_type": "mystery", "factor": 2}}, "does not know"),
        ({"rope_scaling": [1, 2]}, "must be an object"),
        ({"hidden_size": None, "num_attention_heads": None}, "head_dim"),
    ],
)
def test_malformed_configs(patch, message):
    with pytest.raises((FormatError, UnsupportedError), match=message):
        specs({**LLAMA2_7B, **patch})
