"""The architecture registry: every entry validated, and checked against real (tiny) transformers models."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from tiny_models import MULTIMODAL, NO_TRANSFORMERS_CLASS, TINY, build_model

from yarn_cli.core.checkpoint import architectures, hf_config, hf_layout, kv_cache
from yarn_cli.errors import FormatError

ENTRIES = sorted(architectures.registry())
pytest.importorskip("transformers")


def test_registry_loads_and_every_model_type_has_a_tiny_model():
    registry = architectures.registry()
    assert {"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "phi", "gpt_neox", "olmo2", "gptj"} <= set(registry)
    for arch in registry.values():
        if arch.tensors:
            for model_type in arch.model_types:
                assert model_type in TINY or model_type in MULTIMODAL | NO_TRANSFORMERS_CLASS, f"no tiny test model for {model_type}"
    assert architectures.native_model_types() == ["gemma3", "gemma3_text", "llama", "mistral", "qwen2", "qwen3"]
    assert architectures.native_gguf_architectures() == ["gemma3", "llama", "qwen2", "qwen3"]


GOOD = {
    "family": "x",
    "model_types": ["x"],
    "rope_layout": "rotate_half",
    "layer_prefixes": ["m.{layer}."],
    "tensors": {"q": "q.weight", "k": "k.weight"},
}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": "red"}, "unknown keys"),
        ({"tensors": {"q": "q.weight", "k": "k.weight", "query": "x"}}, "unknown tensor roles"),
        ({"rope_layout": "sideways"}, "rope_layout"),
        ({"model_types": "x"}, "wrong type"),
        ({"native_engine": 1}, "wrong type"),
        ({"tensors": {"qkv": "qkv.weight"}}, "qkv_layout"),
        ({"tensors": {"q": "q", "k": "k", "q_norm": "qn"}}, "qk-norm"),
        ({"tensors": {"q": "q.weight"}}, "q and k"),
        ({"native_engine": True}, "native_engine needs roles"),
        ({"layer_prefixes": ["m."]}, "{layer}"),
        ({"context_warning": {"message": "x"}}, "context_warning"),
    ],
)
def test_broken_entries_are_refused_when_loaded(change, message):
    architectures.parse_entry(dict(GOOD), "x.json")
    with pytest.raises(FormatError, match=message):
        architectures.parse_entry({**GOOD, **change}, "x.json")


def test_a_model_type_or_gguf_architecture_claimed_twice_is_refused():
    architectures.build_registry([("x.json", dict(GOOD)), ("y.json", {**GOOD, "family": "y", "model_types": ["y"]})])
    with pytest.raises(FormatError, match=r"\['x'\] already belong to x"):
        architectures.build_registry([("x.json", dict(GOOD)), ("y.json", {**GOOD, "family": "y"})])


@pytest.mark.parametrize("family", ENTRIES)
def test_entry_names_real_tensors(family):
    """Every role an entry names is a tensor of a real model of each of its model types."""
    arch = architectures.registry()[family]
    for model_type in arch.model_types:
        if model_type in MULTIMODAL | NO_TRANSFORMERS_CLASS or not arch.tensors:
            continue
        model = build_model(model_type)
        names = set(model.state_dict())
        # attention-free layers (Qwen3-Next's linear attention) have none of the roles
        for layer in arch.rope_layers(json.loads(model.config.to_json_string()), 2):
            for role in arch.tensors:
                found = [p.format(layer=layer) + name for p in arch.layer_prefixes for name in arch.tensor_names(role)]
                assert set(found) & names, f"{model_type}: no tensor for role {role} among {found}"
        for role, name in arch.top_tensors.items():
            assert name in names, f"{model_type}: no {role} tensor {name}"


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3_text", "gpt_oss", "mistral", "qwen2", "llama"])
def test_sliding_layers_match_transformers(model_type):
    """Which layers slide, from the raw config as a user's config.json has it, equals what transformers builds."""
    from transformers import CONFIG_MAPPING

    overrides = {"num_hidden_layers": 7}
    if model_type == "mistral":
        overrides["sliding_window"] = 16
    if model_type == "qwen2":
        overrides.update(use_sliding_window=True, sliding_window=16, max_window_layers=3)
    raw = {**TINY[model_type], **overrides, "model_type": model_type}
    raw.pop("layer_types", None)  # older configs do not list them: the family's default must be right
    config = CONFIG_MAPPING[model_type](**raw)
    expected = (
        tuple(i for i, kind in enumerate(config.layer_types) if kind == "sliding_attention")
        if getattr(config, "layer_types", None)
        else (tuple(range(7)) if getattr(config, "sliding_window", None) else ())
    )
    assert hf_layout.sliding_layers(raw, 7) == expected


OWN_CACHE = {"minimax"}  # refuses a StaticCache for a cache class of its own


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_kv_cache_bytes_equal_transformers_static_cache(model_type):
    """Our KV-cache size is what transformers' StaticCache allocates for the same config and length."""
    import torch
    from transformers import StaticCache

    overrides = {"sliding_window": 16} if model_type == "mistral" else {}
    model = build_model(model_type, **overrides)
    tokens = 96
    with torch.no_grad():
        if model_type in OWN_CACHE:  # the cache it builds for a prompt of that length
            cache = model(torch.randint(3, 100, (1, tokens)), use_cache=True).past_key_values
        else:
            cache = StaticCache(config=model.config, max_cache_len=tokens)
            model(torch.tensor([[1, 2, 3]]), past_key_values=cache, use_cache=True)
    # linear-attention layers (Qwen3-Next) keep a fixed-size state, no per-token keys and values; a sparse-attention
    # indexer (DeepSeek-V3.2) caches its own keys beside them
    parts = ("keys", "values", "indexer_keys")
    allocated = sum(t.numel() * t.element_size() for layer in cache.layers for part in parts if (t := getattr(layer, part, None)) is not None)
    assert allocated
    raw = json.loads(model.config.to_json_string())
    layout = hf_layout.model_dims(raw)["attention"]
    assert kv_cache.kv_cache_bytes(layout, tokens, bytes_per_value=4) == allocated


def test_gptj_rotary_dim_and_interleaved_layout_come_from_its_entry():
    config = {"model_type": "gptj", "n_embd": 256, "n_head": 4, "rotary_dim": 16, "n_positions": 2048, "n_layer": 2}
    (spec,), _ = hf_config.read_rope_specs(config)
    assert (spec.head_dim, spec.rotary_dim, spec.layout) == (64, 16, "interleaved")


def test_gguf_facts():
    assert architectures.gguf_rope_layout("llama") == "interleaved"
    assert architectures.gguf_rope_layout("qwen2") == "rotate_half"
    assert architectures.gguf_non_rope_reason("gpt2")
    assert architectures.gguf_yarn_log_multiplier("deepseek2") == 0.1
    assert architectures.gguf_yarn_log_multiplier("llama") is None
    assert architectures.gguf_pre_tokenizer_splits_digits("smollm") is True
    assert architectures.for_gguf("gemma3").gguf_local_rope_base == 10000.0
    assert architectures.for_model_type("mistral").context_warning.max_position_embeddings == 32768


def _model_names() -> set[str]:
    names = set()
    for arch in architectures.registry().values():
        names |= {arch.family, *arch.model_types, *arch.gguf_architectures}
    facts = architectures.gguf_facts()
    names |= set(facts["neox_architectures"]) | set(facts["non_rope_architectures"]) | set(facts["yarn_log_multiplier"])
    return names - {"default", "none"}


def test_no_model_name_is_compared_in_python_outside_the_registry():
    """Architecture knowledge lives in the JSON entries: no ``x == "llama"`` or ``x in ("gptj", ...)`` in code."""
    names = _model_names()
    package = Path(architectures.__file__).parents[1]
    offenders = []
    for path in package.rglob("*.py"):
        if path.name == "architectures.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare):
                continue
            for operand in [node.left, *node.comparators]:
                values = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                for value in values:
                    if isinstance(value, ast.Constant) and value.value in names:
                        offenders.append(f"{path.relative_to(package)}:{node.lineno} {value.value!r}")
    assert not offenders, offenders
