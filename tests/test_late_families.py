"""The families of late 2026 where a registry entry alone is not the whole story: models without RoPE (Kimi Linear,
Granite 4.0-H), Granite 4's hub configs under the old layer-type names, OLMo 3's YaRN on full-attention layers only,
and DeepSeek-V3.2's sparse-attention indexer. Each check runs transformers' own classes on the same weights."""

from __future__ import annotations

import copy
import json

import pytest
from conftest import write_config
from test_cli_inspect import run
from test_extend_hf import ORIGINAL, SCALE, load, logits, reference_yarn_model, saved_models  # noqa: F401 (fixture)
from tiny_models import build_model

from yarn_cli.core.checkpoint import hf_layout

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

# Kimi Linear's config as released: MLA layers without RoPE between KDA (linear attention) layers, no position keys
KIMI_LINEAR = {
    "model_type": "kimi_linear",
    "hidden_size": 2304,
    "num_hidden_layers": 27,
    "num_attention_heads": 32,
    "kv_lora_rank": 512,
    "qk_rope_head_dim": 64,
    "linear_attn_config": {"full_attn_layers": [4, 8, 12, 16, 20, 24, 27], "kda_layers": [1, 2, 3]},
}
GRANITE_4_H = {
    "model_type": "granitemoehybrid",
    "hidden_size": 1536,
    "num_hidden_layers": 4,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
    "max_position_embeddings": 131072,
    "position_embedding_type": "nope",
    "layers_block_type": ["mamba", "mamba", "mamba", "attention"],
    "rope_theta": 10000,
}


@pytest.mark.parametrize(
    "config, words",
    [(KIMI_LINEAR, "its MLA layers are NoPE"), (GRANITE_4_H, "'nope'"), ({**GRANITE_4_H, "position_embedding_type": None}, "None")],
    ids=["kimi_linear", "granite-4.0-h", "granite-without-the-key"],
)
def test_models_without_rope_are_refused_in_one_line(config, words, tmp_path, capsys):
    source = tmp_path / "model"
    write_config(source, config)
    for args in (["inspect", str(source)], ["extend", str(source), "-s", "4", "-o", str(tmp_path / "out")]):
        code, out, err = run(args, capsys)
        assert code == 4 and "does not use RoPE" in err and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_granite_hub_names_mamba_and_attention_are_read_as_transformers_remaps_them(tmp_path, capsys):
    """Granite 4's hub configs list ``layers_block_type`` as "mamba"/"attention"; transformers remaps them to
    linear_attention/full_attention. The bake touches the attention layer only, its logits equal transformers' YaRN,
    and the KV cache counts that one layer."""
    source, baked = tmp_path / "granite", tmp_path / "baked"
    build_model("granitemoehybrid", seed=1, qk_scale=8.0).save_pretrained(source)
    config = json.loads((source / "config.json").read_text())
    del config["layer_types"]
    config["layers_block_type"] = ["mamba", "attention"]
    (source / "config.json").write_text(json.dumps(config))
    code, out, err = run(["extend", str(source), "-s", str(SCALE), "-o", str(baked), "--bake-temperature", "--json"], capsys)
    assert code == 0, err
    assert sorted(json.loads(out)["baked_tensors"]) == ["model.layers.1.self_attn.k_proj.weight", "model.layers.1.self_attn.q_proj.weight"]
    assert (logits(load(baked)) - logits(reference_yarn_model(source))).abs().max().item() <= 1e-4
    layout = hf_layout.model_dims(config)["attention"]
    assert (layout.full_layers, layout.linear_layers) == (1, (0,))


def test_olmo3_gets_yarn_on_its_full_attention_layers_only(saved_models, tmp_path, capsys):
    """The written config scales the full-attention layers and leaves the sliding ones at their own base, as OLMo 3's
    authors, vLLM and llama.cpp do; YaRN on the sliding layers too would give other logits (the choice matters)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    source, out = saved_models["olmo3"], tmp_path / "olmo3"
    assert run(["extend", str(source), "-s", str(SCALE), "-o", str(out)], capsys)[0] == 0
    written = json.loads((out / "config.json").read_text())["rope_parameters"]
    assert written["full_attention"]["rope_type"] == "yarn" and written["sliding_attention"]["rope_type"] == "default"
    config = AutoConfig.from_pretrained(source)
    both = copy.deepcopy(config.rope_parameters)
    for block in both.values():
        block.update(rope_type="yarn", factor=SCALE, original_max_position_embeddings=ORIGINAL)
    config.rope_parameters = both
    on_all_layers = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=torch.float32).eval()
    assert (logits(load(out)) - logits(on_all_layers)).abs().max().item() > 1e-2
    # --yarn-layers all: what the user chose instead, config-only and baked, as transformers runs it
    for name, extra in (("all", []), ("all-baked", ["--bake-temperature"])):
        code, _, err = run(["extend", str(source), "-s", str(SCALE), "-o", str(tmp_path / name), "--yarn-layers", "all", *extra], capsys)
        assert code == 0, err
        assert (logits(load(tmp_path / name)) - logits(on_all_layers)).abs().max().item() <= 1e-4, name
    # --replace from an `all` extension, without the option: the sliding block goes back to plain RoPE, no stale YaRN
    assert run(["extend", str(tmp_path / "all"), "-s", "8", "--replace", "-o", str(tmp_path / "again")], capsys)[0] == 0
    assert run(["extend", str(source), "-s", "8", "-o", str(tmp_path / "direct")], capsys)[0] == 0
    assert json.loads((tmp_path / "again" / "config.json").read_text())["rope_parameters"]["sliding_attention"]["rope_type"] == "default"
    assert (logits(load(tmp_path / "again")) - logits(load(tmp_path / "direct"))).abs().max().item() <= 1e-5


def test_yarn_layers_is_refused_where_there_is_no_choice(saved_models, smollm2_gguf, tmp_path, capsys):
    """A model without sliding layers (Llama), one whose sliding layers are its only rotating ones (Cohere2), a value
    that is neither full nor all, and `all` on a GGUF (llama.cpp scales the full-attention layers only): one line each."""
    cases = [
        (saved_models["llama"], "all", 4, "no such choice"),
        (saved_models["cohere2"], "all", 4, "no such choice"),
        (saved_models["olmo3"], "some", 2, "choose full or all"),
        (smollm2_gguf, "all", 2, "llama.cpp applies YaRN"),
    ]
    for source, choice, wanted, words in cases:
        out = tmp_path / "x"
        code, _, err = run(["extend", str(source), "-s", "2", "-o", str(out), "--yarn-layers", choice], capsys)
        assert code == wanted and words in err and len(err.strip().splitlines()) == 1, (source.name, err)
        assert not out.exists()


def test_deepseek_v32_indexer_choice_shapes_the_logits_and_the_bake_leaves_it_alone(saved_models, tmp_path, capsys):
    """The tiny indexer keeps 64 keys of 700, so its choice changes the logits; the bake (all q rows of the MLA) leaves
    the indexer's projections byte for byte, and the baked and config-only logits equal transformers' YaRN."""
    from safetensors.numpy import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    source, baked = saved_models["deepseek_v32"], tmp_path / "baked"
    config = AutoConfig.from_pretrained(source)
    config.index_topk = 2048  # every key: the indexer chooses nothing
    dense = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=torch.float32).eval()
    assert (logits(dense) - logits(load(source))).abs().max().item() > 1e-2
    code, out, err = run(["extend", str(source), "-s", str(SCALE), "-o", str(baked), "--bake-temperature", "--json"], capsys)
    assert code == 0, err
    assert all("indexer" not in name for name in json.loads(out)["baked_tensors"])
    before, after = load_file(source / "model.safetensors"), load_file(baked / "model.safetensors")
    assert all((before[n] == after[n]).all() for n in before if ".indexer." in n)
    assert (logits(load(baked)) - logits(reference_yarn_model(source))).abs().max().item() <= 1e-4


def test_yarn_ext_factor_other_than_one_is_shown_and_written_as_one(tmp_path, capsys):
    """A converter that wrote the scale factor into yarn_ext_factor (ik_llama.cpp#2003): inspect warns, and extend
    --replace writes 1 there, never the factor."""
    from gguf import GGUFReader
    from gguf_factory import write_tiny_gguf

    source = write_tiny_gguf(
        tmp_path / "wrong.gguf",
        context=16384,
        extra={
            "llama.rope.scaling.type": "yarn",
            "llama.rope.scaling.factor": 4.0,
            "llama.rope.scaling.original_context_length": 4096,
            "llama.rope.scaling.yarn_ext_factor": 4.0,
        },
    )
    report = json.loads(run(["inspect", str(source), "--json"], capsys)[1])
    assert any("yarn_ext_factor = 4" in w and "extend writes 1" in w for w in report["warnings"])
    out = tmp_path / "x8.gguf"
    code, _, err = run(["extend", str(source), "-s", "8", "--replace", "-o", str(out)], capsys)
    assert code == 0, err
    assert GGUFReader(str(out)).fields["llama.rope.scaling.yarn_ext_factor"].contents() == 1.0
    assert not [w for w in json.loads(run(["inspect", str(out), "--json"], capsys)[1])["warnings"] if "ext_factor" in w]


def test_dual_chunk_attention_is_shown_and_never_stacked(saved_models, tmp_path, capsys):
    """Qwen2.5-1M's block: the trained length is the block's, extend refuses to stack YaRN on it, and --replace drops
    it and runs YaRN from that length, with transformers' logits for that YaRN."""
    from transformers import AutoConfig, AutoModelForCausalLM

    source = tmp_path / "qwen2_1m"
    source.mkdir()
    for item in saved_models["qwen2"].iterdir():
        (source / item.name).write_bytes(item.read_bytes())
    config = json.loads((source / "config.json").read_text())
    config["dual_chunk_attention_config"] = {"chunk_size": 64, "local_size": 16, "original_max_position_embeddings": 64}
    (source / "config.json").write_text(json.dumps(config))
    report = json.loads(run(["inspect", str(source), "--json"], capsys)[1])
    assert report["rope"]["original_context"] == 64 and any("dual chunk attention" in w for w in report["warnings"])
    code, _, err = run(["extend", str(source), "-s", "4", "-o", str(tmp_path / "x")], capsys)
    assert code == 5 and "dual chunk attention" in err and "--replace" in err and not (tmp_path / "x").exists()
    code, _, err = run(["extend", str(source), "-s", "4", "--replace", "-o", str(tmp_path / "x")], capsys)
    assert code == 0, err
    written = json.loads((tmp_path / "x" / "config.json").read_text())
    assert "dual_chunk_attention_config" not in written and written["rope_scaling"]["original_max_position_embeddings"] == 64
    reference = AutoConfig.from_pretrained(saved_models["qwen2"])
    reference.rope_parameters = {**reference.rope_parameters, "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
    expected = AutoModelForCausalLM.from_pretrained(saved_models["qwen2"], config=reference, dtype=torch.float32).eval()
    assert (logits(load(tmp_path / "x")) - logits(expected)).abs().max().item() <= 1e-4


def test_gemma4_inspect_shows_both_rope_families_and_extend_refuses(tmp_path, capsys):
    """Gemma 4's full-attention layers run proportional RoPE over a wider head: inspect's frequencies are the rotating
    pairs of transformers' own inv_freq (the rest are zero there), the sliding layers keep plain RoPE at their base,
    and extend refuses in one line, because a yarn block on those layers makes transformers' Gemma 4 fail."""
    import copy

    from tiny_models import COMMON, IDS
    from transformers import CONFIG_MAPPING, AutoConfig, AutoModelForCausalLM

    source = tmp_path / "gemma4"
    tiny = dict(COMMON, **IDS, head_dim=16, global_head_dim=32, vocab_size_per_layer_input=128, hidden_size_per_layer_input=8, sliding_window=64)
    config = CONFIG_MAPPING["gemma4_text"](**tiny, layer_types=["sliding_attention", "full_attention"])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model.save_pretrained(source)
    rotary = model.model.rotary_emb
    report = json.loads(run(["inspect", str(source), "--json"], capsys)[1])
    ours = torch.tensor([row["inv_freq"] for row in report["dimensions"]], dtype=torch.float64)
    theirs = rotary.full_attention_inv_freq.double()
    assert torch.allclose(ours, theirs[: len(ours)], rtol=1e-6, atol=0) and (theirs[len(ours) :] == 0).all() and len(ours) == 4
    sliding = report["ropes"][1]
    local = sliding["theta"] ** (-torch.arange(0, sliding["rotary_dim"], 2, dtype=torch.float64) / sliding["rotary_dim"])
    assert torch.allclose(local, rotary.sliding_attention_inv_freq.double(), rtol=1e-6, atol=0)
    code, _, err = run(["extend", str(source), "-s", "4", "-o", str(tmp_path / "x")], capsys)
    assert code == 4 and "proportional RoPE" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
    yarn_config = AutoConfig.from_pretrained(source)
    parameters = copy.deepcopy(yarn_config.rope_parameters)
    parameters["full_attention"].update(rope_type="yarn", factor=1.0, original_max_position_embeddings=256)
    yarn_config.rope_parameters = parameters
    with pytest.raises(RuntimeError, match="size of tensor"):
        AutoModelForCausalLM.from_pretrained(source, config=yarn_config, dtype=torch.float32)(torch.tensor([[1, 2, 3]]))


@pytest.mark.parametrize("k_eq_v", [False, True])
def test_gemma4_kv_cache_counts_the_wider_global_heads(k_eq_v, tmp_path):
    """The hub's form of the config (global_head_dim, num_global_key_value_heads, attention_k_eq_v) and the form
    transformers saves (per_layer_config) both size the cache transformers' StaticCache allocates."""
    from tiny_models import COMMON, IDS
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM, StaticCache

    from yarn_cli.core.checkpoint import kv_cache

    tiny = dict(COMMON, **IDS, head_dim=16, vocab_size_per_layer_input=128, hidden_size_per_layer_input=8, sliding_window=64)
    hub = dict(tiny, global_head_dim=32, num_global_key_value_heads=1, attention_k_eq_v=k_eq_v, layer_types=["sliding_attention", "full_attention"])
    model = AutoModelForCausalLM.from_config(CONFIG_MAPPING["gemma4_text"](**hub), dtype=torch.float32).eval()
    cache = StaticCache(config=model.config, max_cache_len=96)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]), past_key_values=cache, use_cache=True)
    allocated = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    saved = json.loads(model.config.to_json_string())
    for config in ({**hub, "model_type": "gemma4_text"}, saved):
        layout = hf_layout.model_dims(config)["attention"]
        assert kv_cache.kv_cache_bytes(layout, 96, bytes_per_value=4) == allocated, config.get("per_layer_config")
