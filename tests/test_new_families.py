"""Families whose q/k hide in unusual places: Falcon's three fused-qkv layouts and Qwen3-Next's hybrid layers.

Each bake is checked against transformers' own YaRN for the same weights, with peaked attention (q/k x 8) so that a
bake into the wrong rows, layers or norm form shows in the logits.
"""

from __future__ import annotations

import json

import pytest
from test_cli_inspect import run
from test_extend_hf import HF_YARN_TYPES, SCALE, load, logits, reference_yarn_model, saved_models  # noqa: F401 (fixture)
from tiny_models import build_model

from yarn_cli.core.checkpoint import hf_layout
from yarn_cli.core.rope import frequencies as rope

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.mark.parametrize(
    "layout, overrides",
    [
        ("grouped", {}),  # Falcon-40B/180B: per KV group [q heads, k, v]
        ("q_k_v", {"new_decoder_architecture": False, "multi_query": True}),  # Falcon-7B: one KV head after all q heads
        ("per_head", {"new_decoder_architecture": False, "multi_query": False, "num_kv_heads": 4}),  # [q, k, v] per head
    ],
)
def test_falcon_bakes_each_fused_qkv_layout(layout, overrides, tmp_path, capsys):
    from safetensors.numpy import load_file

    source, baked = tmp_path / "falcon", tmp_path / "baked"
    model = build_model("falcon", seed=1, qk_scale=8.0, **overrides)
    model.save_pretrained(source)
    code, _, err = run(["extend", str(source), "-s", str(SCALE), "-o", str(baked), "--bake-temperature"], capsys)
    assert code == 0, err
    expected = logits(reference_yarn_model(source))
    assert (logits(load(baked)) - expected).abs().max().item() <= 1e-4
    # v rows keep their bytes: the last head_dim rows of the fused tensor are v in every layout
    name = "transformer.h.0.self_attention.query_key_value.weight"
    before, after = load_file(source / "model.safetensors")[name], load_file(baked / "model.safetensors")[name]
    assert (before[-16:] == after[-16:]).all() and not (before[:16] == after[:16]).all()
    config = json.loads((source / "config.json").read_text())
    assert hf_layout.model_dims(config)["kv_heads"] == model.config.num_key_value_heads


def test_falcon_kv_heads_from_a_hub_config_without_counts():
    """Falcon-7B's own config.json names no KV-head count: multi_query means one."""
    config = {
        "model_type": "falcon",
        "hidden_size": 4544,
        "n_head": 71,
        "n_layer": 32,
        "multi_query": True,
        "new_decoder_architecture": False,
        "alibi": False,
    }
    assert hf_layout.model_dims(config)["kv_heads"] == 1
    assert hf_layout.model_dims({**config, "num_kv_heads": 71})["kv_heads"] == 1  # transformers 4.x saved the head count


def test_qwen3_next_bakes_its_zero_centred_norms_on_attention_layers_only(tmp_path, capsys):
    """Layer 0 is linear attention (no RoPE, no q/k); layer 1's (1 + w) q/k norms carry m in their rotary entries,
    as (1 + w)·m - 1. q_proj, whose rows interleave query and gate per head, keeps its bytes."""
    from safetensors.numpy import load_file, save_file

    source, baked = tmp_path / "qwen3_next", tmp_path / "baked"
    build_model("qwen3_next", seed=1, qk_scale=8.0).save_pretrained(source)
    code, out, err = run(["extend", str(source), "-s", str(SCALE), "-o", str(baked), "--bake-temperature", "--json"], capsys)
    assert code == 0, err
    assert sorted(json.loads(out)["baked_tensors"]) == ["model.layers.1.self_attn.k_norm.weight", "model.layers.1.self_attn.q_norm.weight"]
    expected = logits(reference_yarn_model(source))
    assert (logits(load(baked)) - expected).abs().max().item() <= 1e-4
    before, after = load_file(source / "model.safetensors"), load_file(baked / "model.safetensors")
    m = rope.get_mscale(SCALE)
    wrong = dict(after)  # a plain w·m, as for a norm that multiplies by w: must show
    for role in ("q_norm", "k_norm"):
        key = f"model.layers.1.self_attn.{role}.weight"
        wrong[key] = before[key].copy()
        wrong[key][:8] = before[key][:8] * m  # rotary half of head_dim 16
    save_file(wrong, str(baked / "model.safetensors"), metadata={"format": "pt"})
    assert (logits(load(baked)) - expected).abs().max().item() > 1e-3


def test_qwen3_next_kv_cache_counts_attention_layers_only(tmp_path, capsys):
    source = tmp_path / "qwen3_next"
    build_model("qwen3_next", seed=1).save_pretrained(source)
    code, out, err = run(["inspect", str(source), "--json"], capsys)
    assert code == 0, err
    kv = json.loads(out)["kv_cache"]
    assert (kv["full_attention_layers"], kv["linear_attention_layers"]) == (1, 1)
    assert kv["bytes_per_token_16bit"] == 2 * 2 * 16 * 2  # K and V, 2 KV heads x 16, one layer, 2 bytes


@pytest.mark.parametrize("model_type", HF_YARN_TYPES)
def test_inspect_of_every_extended_family_is_what_transformers_runs(model_type, saved_models, tmp_path, capsys):
    """inspect's scaled frequencies and attention factor for the extended folder equal the inv_freq and attention
    scaling transformers' own rotary module builds when it loads that folder."""
    plain = tmp_path / "plain"
    assert run(["extend", str(saved_models[model_type]), "-s", str(SCALE), "-o", str(plain)], capsys)[0] == 0
    code, out, err = run(["inspect", str(plain), "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    # one rotary module, or one per layer type (Gemma 3: the global layers' carry YaRN)
    rotary = next(m for m in load(plain).modules() if hasattr(m, "inv_freq") or hasattr(m, "full_attention_inv_freq"))
    prefix = "" if hasattr(rotary, "inv_freq") else "full_attention_"
    ours = torch.tensor([row["scaled_inv_freq"] for row in report["dimensions"]], dtype=torch.float64)
    assert torch.allclose(ours, getattr(rotary, prefix + "inv_freq").double(), rtol=1e-6, atol=0)
    assert report["attention_factor"] == pytest.approx(getattr(rotary, prefix + "attention_scaling"), rel=1e-6)


def test_hunyuan_ntk_alpha_is_read_as_the_base_transformers_runs(saved_models, tmp_path, capsys):
    """The shipped "dynamic" block with alpha is a fixed base: inspect's frequencies are transformers' ntk_alpha
    ones, the unextended model runs as plain RoPE at that base, and extend writes the base as rope_theta."""
    from transformers import AutoConfig, AutoModelForCausalLM

    source = saved_models["hunyuan_v1_dense"]
    code, out, err = run(["inspect", str(source), "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    model = load(source)
    assert model.model.rotary_emb.rope_type == "ntk_alpha"
    ours = torch.tensor([row["inv_freq"] for row in report["dimensions"]], dtype=torch.float64)
    assert torch.allclose(ours, model.model.rotary_emb.inv_freq.double(), rtol=1e-6, atol=0)
    assert report["rope"]["scaling"] is None and any("alpha 1000" in w for w in report["warnings"])
    config = AutoConfig.from_pretrained(source)
    config.rope_parameters = {"rope_type": "default", "rope_theta": report["rope"]["theta"]}
    plain_rope = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=torch.float32).eval()
    assert (logits(plain_rope) - logits(model)).abs().max().item() <= 1e-4
    code, out, err = run(["extend", str(source), "-s", "4", "-o", str(tmp_path / "x"), "--json"], capsys)
    assert code == 0, err
    written = json.loads((tmp_path / "x" / "config.json").read_text())
    assert written["rope_theta"] == pytest.approx(report["rope"]["theta"]) and "alpha" not in written["rope_scaling"]
    assert any("cancel" in note for note in json.loads(out)["notes"])


def test_hunyuan_norms_after_rope_really_cancel_the_config_factor(saved_models, tmp_path, capsys):
    """Why extend says a config-only HunYuan gets no m: transformers' logits are the same with the paper's m and with
    attention_factor 1.0, while the bake's differ from both."""
    source = saved_models["hunyuan_v1_dense"]
    paper, one, baked = tmp_path / "paper", tmp_path / "one", tmp_path / "baked"
    assert run(["extend", str(source), "-s", str(SCALE), "-o", str(paper)], capsys)[0] == 0
    assert run(["extend", str(source), "-s", str(SCALE), "-o", str(one), "--attention-factor", "1"], capsys)[0] == 0
    assert run(["extend", str(source), "-s", str(SCALE), "-o", str(baked), "--bake-temperature"], capsys)[0] == 0
    assert json.loads((one / "config.json").read_text())["rope_scaling"]["attention_factor"] == 1.0
    assert (logits(load(paper)) - logits(load(one))).abs().max().item() <= 1e-5
    assert (logits(load(paper)) - logits(load(baked))).abs().max().item() > 1e-3


def test_llama4_config_with_an_empty_no_rope_list_rotates_three_layers_in_four(tmp_path, capsys):
    """Llama 4's hub configs ship `no_rope_layers: []`, which transformers fills with a NoPE layer every
    `no_rope_layer_interval` (4): the bake leaves layer 3 alone, and the chunked layers' KV cache holds one chunk."""
    from safetensors.numpy import load_file

    source, baked = tmp_path / "llama4", tmp_path / "baked"
    build_model("llama4_text", seed=1, qk_scale=8.0, num_hidden_layers=4, no_rope_layers=[1, 1, 1, 0]).save_pretrained(source)
    config = json.loads((source / "config.json").read_text())
    config["no_rope_layers"] = []
    config.pop("layer_types", None)
    (source / "config.json").write_text(json.dumps(config))
    code, out, err = run(["extend", str(source), "-s", str(SCALE), "-o", str(baked), "--bake-temperature", "--json"], capsys)
    assert code == 0, err
    layers = {int(name.split(".")[2]) for name in json.loads(out)["baked_tensors"]}
    assert layers == {0, 1, 2}
    assert (logits(load(baked)) - logits(reference_yarn_model(source))).abs().max().item() <= 1e-4
    before, after = load_file(source / "model.safetensors"), load_file(baked / "model.safetensors")
    assert (before["model.layers.3.self_attn.q_proj.weight"] == after["model.layers.3.self_attn.q_proj.weight"]).all()
    kv = json.loads(run(["inspect", str(source), "--json"], capsys)[1])["kv_cache"]
    assert (kv["full_attention_layers"], kv["sliding_window_layers"], kv["sliding_window"]) == (1, 3, 64)
