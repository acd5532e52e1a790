"""`yarn extend` on HF checkpoints: transformers loads the output and its logits equal its own YaRN's."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
from conftest import tree_digest, write_config
from real_configs import DEEPSEEK_V3, GEMMA3_4B, GPT_OSS_20B, LLAMA31_8B, PHI3_MINI_128K, QWEN3_8B_YARN
from test_cli_inspect import run
from tiny_models import TINY, build_model

from yarn_cli.core.checkpoint import architectures
from yarn_cli.core.extend import hf_plan
from yarn_cli.core.extend.options import ExtendRequest
from yarn_cli.core.rope import frequencies as rope
from yarn_cli.errors import AlreadyScaledError, UnsupportedError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SCALE = 4.0
ORIGINAL = TINY["llama"]["max_position_embeddings"]  # 256
MODEL_TYPES = sorted(TINY)
# transformers has no YaRN for these: their bake math is checked with the rotary set by hand below.
NO_HF_YARN = sorted(t for t in TINY if (architectures.for_model_type(t) and architectures.for_model_type(t).hf_yarn_unsupported))
HF_YARN_TYPES = [t for t in MODEL_TYPES if t not in NO_HF_YARN]


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    folders = {}
    for model_type in MODEL_TYPES:
        folder = root / model_type
        build_model(model_type, seed=1, qk_scale=8.0).save_pretrained(folder)
        (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": ORIGINAL, "padding_side": "left"}, indent=2))
        (folder / "README.md").write_text("# tiny\n")
        folders[model_type] = folder
    return folders


def reference_yarn_model(folder: Path):
    """transformers' own YaRN: the original weights with a yarn rope set through its config API."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    family = architectures.for_model_type(config.model_type)
    # the family's own YaRN form (DeepSeek's mscale pair), which its runtimes agree on
    yarn = {"rope_type": "yarn", "factor": SCALE, "original_max_position_embeddings": ORIGINAL, **family.yarn_block_keys}
    parameters = copy.deepcopy(config.rope_parameters)
    if parameters.get("alpha"):  # HunYuan's NTK-alpha: YaRN scales the fixed base transformers' own model runs
        inv_freq = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).model.rotary_emb.inv_freq.double()
        parameters["rope_theta"] = float(inv_freq[1] ** (-len(inv_freq)))  # inv_freq[1] = θ^(-2/D), D = 2·len
        for key in ("alpha", "type"):
            parameters.pop(key)
    if "full_attention" in parameters:
        parameters["full_attention"].update(yarn)
    else:
        parameters.update(yarn)
    config.rope_parameters = parameters
    config.max_position_embeddings = int(ORIGINAL * SCALE)
    if getattr(config, "head_dim", 0) is None:  # transformers' yarn cannot read head_dim = None
        config.head_dim = config.hidden_size // config.num_attention_heads
    return AutoModelForCausalLM.from_pretrained(folder, config=config, dtype=torch.float32).eval()


def logits(model, length: int = 700) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 128, (1, length), generator=generator)
    with torch.no_grad():
        return model(ids).logits[0]


def load(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("model_type", HF_YARN_TYPES)
def test_extend_matches_transformers_yarn(model_type, saved_models, tmp_path, capsys, caplog):
    source = saved_models[model_type]
    before = tree_digest(source)
    plain, baked = tmp_path / "plain", tmp_path / "baked"
    code, out, err = run(["extend", str(source), "--scale", str(SCALE), "-o", str(plain), "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["tensors_changed"] == 0 and summary["target_context"] == int(ORIGINAL * SCALE)
    code, out, err = run(["extend", str(source), "--scale", str(SCALE), "-o", str(baked), "--bake-temperature", "--json"], capsys)
    assert code == 0, err
    baked_summary = json.loads(out)
    assert baked_summary["tensors_changed"] > 0
    assert tree_digest(source) == before  # the input is never modified

    # config-only: every tensor byte unchanged
    assert sha(plain / "model.safetensors") == sha(source / "model.safetensors")
    # length caps raised, other files carried over
    assert json.loads((plain / "tokenizer_config.json").read_text())["model_max_length"] == int(ORIGINAL * SCALE)
    assert (plain / "README.md").read_text() == "# tiny\n"

    expected = logits(reference_yarn_model(source))
    caplog.clear()
    with caplog.at_level("WARNING"):
        got_plain = logits(load(plain))
        got_baked = logits(load(baked))
    warnings = caplog.text
    assert "does not match" not in warnings and "Unrecognized keys" not in warnings, warnings
    assert (got_plain - expected).abs().max().item() <= 1e-4
    if architectures.for_model_type(model_type).norm_after_rope:
        expected = logits(norms_times_m(reference_yarn_model(source)))  # m lives in the norm weights, after RoPE
    assert (got_baked - expected).abs().max().item() <= 1e-4

    from transformers import AutoConfig

    parameters = AutoConfig.from_pretrained(baked).rope_parameters
    assert parameters.get("full_attention", parameters)["attention_factor"] == 1.0


def norms_times_m(model):
    """transformers' model with its q/k norm weights (after RoPE, HunYuan) times m, in memory: where the paper's m must
    go when those norms cancel any factor in cos/sin."""
    family = architectures.for_model_type(model.config.model_type)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith((family.tensors["q_norm"], family.tensors["k_norm"])):
                param.mul_(rope.get_mscale(SCALE))
    return model


def set_rotary(model, inv_freq, attention_scaling):
    for module in model.modules():
        if hasattr(module, "inv_freq") and hasattr(module, "attention_scaling"):
            module.inv_freq = torch.as_tensor(inv_freq, dtype=torch.float32)
            module.original_inv_freq = module.inv_freq
            module.attention_scaling = attention_scaling


@pytest.mark.parametrize("model_type", NO_HF_YARN)
def test_bake_math_where_transformers_has_no_yarn(model_type, saved_models, tmp_path, capsys):
    """The same weights-vs-runtime equality, with YaRN's θ' and m put into the rotary module by hand."""
    from transformers import AutoModelForCausalLM

    from yarn_cli.core.checkpoint import hf_config
    from yarn_cli.core.extend import bake_plan
    from yarn_cli.io import hf_writer

    source = saved_models[model_type]
    code, _, err = run(["extend", str(source), "-s", "4", "-o", str(tmp_path / "refused")], capsys)
    assert code == 4 and "longrope" in err and not (tmp_path / "refused").exists()

    config = json.loads((source / "config.json").read_text())
    with pytest.raises(UnsupportedError, match="longrope"):  # the core planner refuses it too, not only the CLI
        hf_plan.plan_config(config, ExtendRequest(scale=SCALE, bake_temperature=True))
    # The config plan as for a family that accepts it; the bake ops below come from this family's own entry.
    plan = hf_plan.plan_config({**config, "model_type": "llama"}, ExtendRequest(scale=SCALE, bake_temperature=True))
    headers = hf_writer.read_shards(source)
    tensors = {n: (i.dtype, i.shape) for h in headers for n, i in h.tensors.items()}
    ops = bake_plan.plan_bake(config, tensors, plan.bake_factor)
    baked = tmp_path / "baked"
    hf_writer.write_extension(source, plan, ops, baked)
    spec = hf_config.read_rope_specs(config)[0][0]
    yarn = rope.yarn(spec.base, spec.rotary_dim, spec.original_context, SCALE)
    reference = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    set_rotary(reference, yarn.inv_freq, yarn.attention_factor)
    ours = AutoModelForCausalLM.from_pretrained(baked, config=reference.config, dtype=torch.float32).eval()
    set_rotary(ours, yarn.inv_freq, 1.0)
    assert (logits(ours) - logits(reference)).abs().max().item() <= 1e-4
    set_rotary(ours, yarn.inv_freq, yarn.attention_factor)  # m applied twice must show
    assert (logits(ours) - logits(reference)).abs().max().item() > 1e-3  # 10x the tolerance above


def test_bake_is_what_makes_the_logits_match(saved_models, tmp_path, capsys):
    """Sensitivity: the baked weights without attention_factor 1.0 apply m twice and drift."""
    source = saved_models["llama"]
    baked = tmp_path / "baked"
    assert run(["extend", str(source), "-s", str(SCALE), "-o", str(baked), "--bake-temperature"], capsys)[0] == 0
    config = json.loads((baked / "config.json").read_text())
    for block in ("rope_scaling", "rope_parameters"):
        config[block].pop("attention_factor")
    (baked / "config.json").write_text(json.dumps(config))
    drift = (logits(load(baked)) - logits(reference_yarn_model(source))).abs().max().item()
    assert drift > 1e-3  # 10x the tolerance of the equality tests


def test_bake_touches_only_rotary_rows(saved_models, tmp_path, capsys):
    from safetensors.numpy import load_file

    source = saved_models["phi"]  # partial rotary 0.5: head_dim 16, rotary 8
    baked = tmp_path / "baked"
    assert run(["extend", str(source), "-s", "4", "-o", str(baked), "--bake-temperature"], capsys)[0] == 0
    before, after = load_file(source / "model.safetensors"), load_file(baked / "model.safetensors")
    m = rope.get_mscale(4)
    q_before, q_after = before["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"]
    for head in range(4):
        rotary, passthrough = slice(head * 16, head * 16 + 8), slice(head * 16 + 8, head * 16 + 16)
        assert (q_after[rotary] == (q_before[rotary].astype("float32") * m).astype("float32")).all()
        assert (q_after[passthrough] == q_before[passthrough]).all()
    for name in before:
        if "q_proj" not in name and "k_proj" not in name:
            assert (before[name] == after[name]).all(), name


@pytest.mark.parametrize("model_type", ["smollm3", "cohere2", "llama4_text"])
def test_bake_leaves_layers_without_rope_alone(model_type, tmp_path, capsys):
    """Layer 1 does not rotate (SmolLM3's no_rope_layers; Cohere2's global layer), so its q/k keep their bytes; layer
    0's carry m. With peaked attention (q/k x 10) the baked model gives transformers' own YaRN logits, and baking
    every layer would not."""
    from safetensors.numpy import load_file

    source, baked = tmp_path / model_type, tmp_path / "baked"
    model = build_model(model_type, seed=1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(10.0)
    model.save_pretrained(source)
    code, out, err = run(["extend", str(source), "-s", str(SCALE), "-o", str(baked), "--bake-temperature", "--json"], capsys)
    assert code == 0, err
    warned = any("global layers have no position encoding" in note for note in json.loads(out)["notes"])
    assert warned == (model_type == "cohere2")  # the user is told where YaRN cannot reach
    before, after = load_file(source / "model.safetensors"), load_file(baked / "model.safetensors")
    for role in ("q_proj", "k_proj"):
        name = "model.layers.{}.self_attn." + role + ".weight"
        assert (after[name.format(1)] == before[name.format(1)]).all()
        assert not (after[name.format(0)] == before[name.format(0)]).all()
    expected = logits(reference_yarn_model(source))
    assert (logits(load(baked)) - expected).abs().max().item() <= 1e-4
    wrong = {k: v.copy() for k, v in after.items()}  # what a bake into every layer would have written
    for role in ("q_proj", "k_proj"):
        key = f"model.layers.1.self_attn.{role}.weight"
        wrong[key] = (before[key].astype("float32") * rope.get_mscale(SCALE)).astype(before[key].dtype)
    from safetensors.numpy import save_file

    save_file(wrong, str(baked / "model.safetensors"), metadata={"format": "pt"})
    assert (logits(load(baked)) - expected).abs().max().item() > 1e-3


def test_exaone4_without_windows_rotates_every_layer(tmp_path, capsys):
    """Exaone 4 rotates only its sliding layers when it has windows (32B), and every layer when it has none (1.2B)."""
    from safetensors.numpy import load_file

    source, baked = tmp_path / "exaone4", tmp_path / "baked"
    build_model("exaone4", seed=1, qk_scale=8.0, sliding_window=None, layer_types=["full_attention"] * 2).save_pretrained(source)
    assert run(["extend", str(source), "-s", str(SCALE), "-o", str(baked), "--bake-temperature"], capsys)[0] == 0
    before, after = load_file(source / "model.safetensors"), load_file(baked / "model.safetensors")
    for layer in range(2):
        name = f"model.layers.{layer}.self_attn.q_norm.weight"
        assert not (before[name] == after[name]).all(), name
    assert (logits(load(baked)) - logits(reference_yarn_model(source))).abs().max().item() <= 1e-4


@pytest.mark.parametrize("use_qk_norm", [True, False])
def test_glm4_moe_bakes_into_its_norms_or_its_projections(use_qk_norm, tmp_path, capsys):
    """GLM-4.5's q/k norms exist only with use_qk_norm; then they carry m (the projections before them cannot), and
    without it q_proj/k_proj and their biases do. Partial rotary 0.5: only the first half of each head."""
    from safetensors.numpy import load_file

    source, baked = tmp_path / "glm", tmp_path / "baked"
    build_model("glm4_moe", seed=1, qk_scale=8.0, use_qk_norm=use_qk_norm).save_pretrained(source)
    code, out, err = run(["extend", str(source), "-s", str(SCALE), "-o", str(baked), "--bake-temperature", "--json"], capsys)
    assert code == 0, err
    planned = {name.split("self_attn.")[1] for name in json.loads(out)["baked_tensors"] if "layers.0." in name}
    assert planned == ({"q_norm.weight", "k_norm.weight"} if use_qk_norm else {"q_proj.weight", "k_proj.weight", "q_proj.bias", "k_proj.bias"})
    before, after = load_file(source / "model.safetensors"), load_file(baked / "model.safetensors")
    weight = "model.layers.0.self_attn." + ("q_norm.weight" if use_qk_norm else "q_proj.weight")
    assert not (before[weight] == after[weight]).all()
    assert (logits(load(baked)) - logits(reference_yarn_model(source))).abs().max().item() <= 1e-4


def test_a_norm_after_rope_cancels_m_so_bake_is_refused_and_extend_says_so(tmp_path, capsys):
    """Llama 4 Scout's use_qk_norm: a weightless L2 norm after RoPE. transformers' logits are the same with YaRN's m
    and with m = 1 (the warning is true), and differ from the unextended model's (the frequencies do change)."""
    from transformers import AutoConfig

    source = tmp_path / "scout"
    model = build_model("llama4_text", seed=1, use_qk_norm=True)
    model.save_pretrained(source)
    code, _, err = run(["extend", str(source), "-s", str(SCALE), "-o", str(tmp_path / "b"), "--bake-temperature"], capsys)
    assert code != 0 and "use_qk_norm" in err and "cancels" in err and not (tmp_path / "b").exists()
    code, out, err = run(["extend", str(source), "-s", str(SCALE), "-o", str(tmp_path / "plain"), "--json"], capsys)
    assert code == 0 and any("cancels YaRN's attention factor" in note for note in json.loads(out)["notes"]), err
    extended = logits(load(tmp_path / "plain"))
    config = AutoConfig.from_pretrained(tmp_path / "plain")
    config.rope_parameters = {**config.rope_parameters, "attention_factor": 1.0}
    from transformers import AutoModelForCausalLM

    without_m = logits(AutoModelForCausalLM.from_pretrained(tmp_path / "plain", config=config, dtype=torch.float32).eval())
    assert (extended - without_m).abs().max().item() <= 1e-5
    assert (extended - logits(load(source))).abs().max().item() > 1e-4


def test_second_bake_and_stacking_refused(saved_models, tmp_path, capsys):
    source = saved_models["llama"]
    baked = tmp_path / "baked"
    assert run(["extend", str(source), "-s", "2", "-o", str(baked), "--bake-temperature"], capsys)[0] == 0
    code, _, err = run(["extend", str(baked), "-s", "2", "-o", str(tmp_path / "again"), "--bake-temperature", "--replace"], capsys)
    assert code == 5 and "baked" in err and not (tmp_path / "again").exists()
    plain = tmp_path / "plain"
    assert run(["extend", str(source), "-s", "2", "-o", str(plain)], capsys)[0] == 0
    code, _, err = run(["extend", str(plain), "-s", "4", "-o", str(tmp_path / "x")], capsys)
    assert code == 5 and "already declares a yarn x2 from 256" in err and "--replace" in err
    code, out, err = run(["extend", str(plain), "-s", "4", "-o", str(tmp_path / "x"), "--replace", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["replaced"] == "yarn x2 from 256" and json.loads(out)["target_context"] == 1024


def test_unknown_family_and_quantized_refused(tmp_path, capsys):
    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path / "m"
    write_config(
        folder,
        {
            "model_type": "acme_lm",
            "hidden_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 1,
            "max_position_embeddings": 256,
            "rope_theta": 10000.0,
        },
    )
    save_file({"x": np.zeros(4, np.float32)}, str(folder / "model.safetensors"))
    code, _, err = run(["extend", str(folder), "-s", "2", "--bake-temperature", "-o", str(tmp_path / "o")], capsys)
    assert code == 4 and "supported:" in err and "llama" in err and not (tmp_path / "o").exists()
    assert run(["extend", str(folder), "-s", "2", "-o", str(tmp_path / "o")], capsys)[0] == 0  # config-only works
    folder2 = tmp_path / "q"
    write_config(
        folder2,
        {
            "model_type": "llama",
            "hidden_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 1,
            "num_key_value_heads": 4,
            "max_position_embeddings": 256,
        },
    )
    save_file(
        {
            "model.layers.0.self_attn.q_proj.weight": np.zeros((64, 64), np.int8),
            "model.layers.0.self_attn.k_proj.weight": np.zeros((64, 64), np.int8),
        },
        str(folder2 / "model.safetensors"),
    )
    code, _, err = run(["extend", str(folder2), "-s", "2", "--bake-temperature", "-o", str(tmp_path / "o2")], capsys)
    assert code == 4 and "I8" in err and not (tmp_path / "o2").exists()


def test_output_rules_and_atomicity(saved_models, tmp_path, capsys, monkeypatch):
    source = saved_models["llama"]
    code, _, err = run(["extend", str(source), "-s", "2", "-o", str(source), "--force"], capsys)
    assert code == 6 and "must not be the input" in err
    code, _, err = run(["extend", str(source), "-s", "2", "-o", str(source / "inside"), "--force"], capsys)
    assert code == 6
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep").write_text("x")
    code, _, err = run(["extend", str(source), "-s", "2", "-o", str(out)], capsys)
    assert code == 6 and "--force" in err and (out / "keep").exists()
    from yarn_cli.io import bake_cast

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bake_cast, "scaled_rows", crash)  # raised inside a worker thread
    target = tmp_path / "never"
    code, _, err = run(["extend", str(source), "-s", "2", "-o", str(target), "--bake-temperature"], capsys)
    assert code == 130 and not target.exists()
    assert [p.name for p in tmp_path.iterdir() if "yarn-tmp" in p.name] == []
    monkeypatch.undo()
    assert run(["extend", str(source), "-s", "2", "-o", str(out), "--force"], capsys)[0] == 0
    assert not (out / "keep").exists() and (out / "config.json").exists()


def test_dry_run_and_to(saved_models, tmp_path, capsys):
    source = saved_models["qwen3"]
    code, out, err = run(["extend", str(source), "--to", "1k", "--dry-run", "--json", "-o", str(tmp_path / "o")], capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["scale"] == 4.0 and plan["dry_run"] and plan["files"] == [] and not (tmp_path / "o").exists()
    paths = [c["path"] for c in plan["config_changes"]]
    assert paths == ["rope_parameters", "rope_scaling", "rope_theta", "max_position_embeddings"]
    assert plan["length_caps"] == [{"path": "tokenizer_config.json:model_max_length", "old": 256, "new": 1024}]


def test_config_keys_and_order_kept(saved_models, tmp_path, capsys):
    source = saved_models["mistral"]
    out = tmp_path / "o"
    assert run(["extend", str(source), "-s", "3", "-o", str(out)], capsys)[0] == 0
    before = json.loads((source / "config.json").read_text())
    after = json.loads((out / "config.json").read_text())
    changed = {"rope_parameters", "rope_scaling", "rope_theta", "max_position_embeddings"}
    assert [k for k in after if k not in changed] == [k for k in before if k not in changed]
    assert all(after[k] == before[k] for k in before if k not in changed)
    assert after["rope_scaling"] == {"rope_type": "yarn", "type": "yarn", "factor": 3.0, "original_max_position_embeddings": 256}
    assert isinstance(after["rope_scaling"]["factor"], float)
    assert after["rope_parameters"]["rope_type"] == "yarn" and after["rope_parameters"]["factor"] == 3.0
    assert after["max_position_embeddings"] == 768


@pytest.mark.parametrize(
    "config, expected",
    [
        (GEMMA3_4B, ("text_config", 131072)),
        (DEEPSEEK_V3, None),
        (GPT_OSS_20B, None),
        (PHI3_MINI_128K, None),
        (LLAMA31_8B, None),
        (QWEN3_8B_YARN, None),
    ],
    ids=["gemma3", "deepseek-v3", "gpt-oss", "phi3-longrope", "llama3.1", "qwen3-yarn"],
)
def test_real_configs(config, expected):
    if config is PHI3_MINI_128K:  # its family reaches long context with longrope; a YaRN config would not be honoured
        with pytest.raises(UnsupportedError, match="longrope"):
            hf_plan.plan_config(config, ExtendRequest(scale=2.0, replace=True))
        return
    if expected is None:
        with pytest.raises(AlreadyScaledError, match="--replace"):
            hf_plan.plan_config(config, ExtendRequest(scale=2.0))
        plan = hf_plan.plan_config(config, ExtendRequest(scale=2.0, replace=True))
        block = plan.config.get("rope_scaling")
        if config is DEEPSEEK_V3:  # model keys of the yarn block survive a replace
            assert block["mscale"] == 1.0 and block["mscale_all_dim"] == 1.0 and plan.original_context == 4096
        if config is GPT_OSS_20B:
            assert block["truncate"] is False
        assert plan.config["max_position_embeddings"] == plan.target_context == 2 * plan.original_context
        return
    with pytest.raises(AlreadyScaledError, match="linear x8"):
        hf_plan.plan_config(config, ExtendRequest(scale=2.0))  # Gemma 3's global layers already carry linear x8


def test_gemma3_nested_text_config_read_by_transformers():
    from transformers import CONFIG_MAPPING

    config = copy.deepcopy(GEMMA3_4B)
    config["text_config"].pop("rope_scaling")
    plan = hf_plan.plan_config(config, ExtendRequest(scale=4.0, original_context=32768))
    text = plan.config["text_config"]
    assert text["rope_scaling"]["factor"] == 4.0 and text["max_position_embeddings"] == 131072
    assert "rope_scaling" not in plan.config  # the block lands in the nested text model
    data = copy.deepcopy(plan.config)
    loaded = CONFIG_MAPPING[data.pop("model_type")](**data).get_text_config()
    parameters = loaded.rope_parameters
    full = parameters.get("full_attention", parameters)
    assert full["rope_type"] == "yarn" and full["factor"] == 4.0


def test_registry_covers_every_family_in_these_tests():
    covered = {t for arch in architectures.registry().values() for t in arch.model_types}
    assert set(MODEL_TYPES) <= covered


@pytest.mark.parametrize("dtype", ["BF16", "F16", "F32", "F64"])
def test_torch_free_casts_match_torch(dtype):
    """bf16/f16 decode-scale-encode without torch gives torch's bytes (round to nearest even)."""
    from yarn_cli.core.extend.bake_plan import BakeOp
    from yarn_cli.io.bake_cast import scaled_rows

    torch_dtype = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}[dtype]
    generator = torch.Generator().manual_seed(0)
    values = torch.cat(
        [
            torch.randn(4096, generator=generator) * 10 ** torch.randint(-6, 4, (4096,), generator=generator),
            torch.tensor([0.0, -0.0, 1e-40, 3e38, float("inf"), -float("inf")]),
        ]
    ).to(torch_dtype)
    raw = values.contiguous().view(torch.uint8).numpy().tobytes()
    for factor, offset in ((1.2079441541679836, 0.0), (1.1386, 1.0)):
        work = values.to(torch.float64 if dtype == "F64" else torch.float32)
        expected = (factor * (offset + work) - offset) if offset else work * factor
        expected_bytes = expected.to(torch_dtype).contiguous().view(torch.uint8).numpy().tobytes()
        assert scaled_rows(raw, dtype, BakeOp("t", ((0, 1),), factor, offset)) == expected_bytes


def test_run_hints_and_modelfile_refused_for_hf(saved_models, tmp_path, capsys):
    source = saved_models["llama"]
    code, stdout, _ = run(["extend", str(source), "-s", "4", "-o", str(tmp_path / "o"), "--json"], capsys)
    hints = {hint["engine"]: hint["command"] for hint in json.loads(stdout)["run"]}
    assert hints["vllm"] == f"vllm serve {tmp_path / 'o'} --max-model-len 1024"
    assert hints["sglang"].endswith("--context-length 1024") and "from_pretrained" in hints["transformers"]
    code, _, err = run(["extend", str(source), "-s", "4", "-o", str(tmp_path / "p"), "--modelfile"], capsys)
    assert code == 2 and "GGUF" in err and not (tmp_path / "p").exists()


def test_minimax_m2_bakes_the_rotary_rows_of_its_whole_projection_norm(tmp_path, capsys):
    """MiniMax-M2 normalises all heads of q (and of k) at once before RoPE, and rotates only rotary_dim of each head:
    the bake goes into those entries of the norm weights. With peaked attention (norms x 8) the bake gives
    transformers' own YaRN, and scaling every entry of the norms would not. Its shipped configs name the rotary
    part with the legacy key rotary_dim."""
    from safetensors.numpy import load_file, save_file

    source, baked = tmp_path / "minimax", tmp_path / "baked"
    model = build_model("minimax_m2", seed=1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                param.mul_(8.0)
    model.save_pretrained(source)
    assert run(["extend", str(source), "-s", str(SCALE), "-o", str(baked), "--bake-temperature"], capsys)[0] == 0
    expected = logits(reference_yarn_model(source))
    assert (logits(load(baked)) - expected).abs().max().item() <= 1e-4
    before, after = load_file(source / "model.safetensors"), load_file(baked / "model.safetensors")
    name = "model.layers.0.self_attn.q_norm.weight"
    rotary = [h * 16 + i for h in range(4) for i in range(8)]
    passthrough = [h * 16 + i for h in range(4) for i in range(8, 16)]
    assert (after[name][passthrough] == before[name][passthrough]).all() and not (after[name][rotary] == before[name][rotary]).any()
    wrong = dict(after)
    for layer in range(2):
        for role in ("q_norm", "k_norm"):
            key = f"model.layers.{layer}.self_attn.{role}.weight"
            wrong[key] = (before[key].astype("float32") * rope.get_mscale(SCALE)).astype(before[key].dtype)
    save_file(wrong, str(baked / "model.safetensors"), metadata={"format": "pt"})
    assert (logits(load(baked)) - expected).abs().max().item() > 1e-3
    shipped = {
        "model_type": "minimax_m2",
        "hidden_size": 3072,
        "num_attention_heads": 48,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "rotary_dim": 64,
        "max_position_embeddings": 196608,
        "rope_theta": 5000000,
    }
    write_config(tmp_path / "shipped", shipped)
    code, out, err = run(["inspect", str(tmp_path / "shipped"), "--json"], capsys)
    assert code == 0 and json.loads(out)["rope"]["rotary_dim"] == 64, err
