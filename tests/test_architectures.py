"""Every registry entry, checked against a real (tiny) transformers model of each of its model types."""

from __future__ import annotations

import re

import pytest

from tiny_models import MULTIMODAL, TINY, build_model
from yarn_cli.core import architectures

ENTRIES = sorted(architectures.registry())
pytest.importorskip("transformers")


def test_registry_loads_and_is_consistent():
    registry = architectures.registry()
    assert {"llama", "mistral", "qwen2", "qwen3", "gemma3", "phi3", "phi", "gpt_neox", "olmo2"} <= set(registry)
    seen = set()
    for arch in registry.values():
        assert arch.rope_layout in ("rotate_half", "interleaved")
        assert all("{layer}" in p for p in arch.layer_prefixes)
        assert not (seen & set(arch.model_types)), "a model_type belongs to one family"
        seen |= set(arch.model_types)
        kind = arch.attention_kind
        keys = set(arch.attention)
        if kind == "separate":
            assert {"q_weight", "k_weight"} <= keys
        elif kind == "fused":
            assert arch.attention["qkv_layout"] in ("q_k_v", "per_head_interleaved")
        else:
            assert {"q_norm", "k_norm", "norm_scope", "norm_offset"} <= keys
        for model_type in arch.model_types:
            assert model_type in TINY or model_type in MULTIMODAL, f"no tiny test model for {model_type}"


@pytest.mark.parametrize("family", ENTRIES)
def test_entry_names_real_tensors(family):
    arch = architectures.registry()[family]
    for model_type in arch.model_types:
        if model_type in MULTIMODAL:
            continue
        names = set(build_model(model_type).state_dict())
        for layer in range(2):
            prefixes = [p.format(layer=layer) for p in arch.layer_prefixes]
            for role, suffix in arch.attention.items():
                if role in ("qkv_layout", "norm_scope", "norm_offset"):
                    continue
                found = [p + suffix for p in prefixes if p + suffix in names]
                assert found, f"{model_type}: no tensor {suffix!r} under {prefixes}"
        if arch.attention_kind == "qk_norm":
            # the projections are there too, but the norm comes after them
            assert any(re.search(r"layers\.0\.self_attn\.q_proj\.weight$", n) for n in names)


def test_lookup_and_reasons():
    assert architectures.for_model_type("mistral").family == "mistral"
    assert architectures.for_model_type("unknown-thing") is None
    assert architectures.hf_non_rope_reason("bloom") == "ALiBi attention biases"
    assert architectures.gguf_rope_layout("llama") == "interleaved"
    assert architectures.gguf_rope_layout("qwen2") == "rotate_half"
    assert "gpt2" in architectures._gguf()["non_rope_architectures"]
