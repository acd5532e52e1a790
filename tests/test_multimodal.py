"""Qwen2.5-VL and Qwen3-VL: multimodal RoPE (``mrope_section``) under a ``text_config``. The extended config, loaded by
transformers' own model class, gives the logits of the same model built with the YaRN config Qwen's docs describe
(sections kept beside ``rope_type: yarn``); the baked checkpoint gives them too."""

from __future__ import annotations

import copy
import json

import pytest
from test_cli_inspect import run

from yarn_cli.core.rope import frequencies as rope

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SCALE, ORIGINAL = 4.0, 256
TEXT = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    head_dim=16,
    num_key_value_heads=2,
    max_position_embeddings=ORIGINAL,
    rms_norm_eps=1e-6,
)
MODELS = {
    "qwen2_5_vl": (
        dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}),
        dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, fullatt_block_indexes=[0]),
        "self_attn.q_proj.weight",
    ),
    "qwen3_vl": (
        dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3], "mrope_interleaved": True}),
        dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, deepstack_visual_indexes=[]),
        "self_attn.q_norm.weight",
    ),
    # Qwen3.5: a linear-attention layer (no RoPE), then a full-attention one with Qwen3-Next's gated q and (1 + w) norms
    "qwen3_5": (
        dict(
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.5,
                "mrope_section": [1, 1, 2],
                "mrope_interleaved": True,
            },
            layer_types=["linear_attention", "full_attention"],
            linear_num_key_heads=2,
            linear_num_value_heads=4,
            linear_key_head_dim=16,
            linear_value_head_dim=16,
        ),
        dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64),
        "self_attn.q_norm.weight",
    ),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def tiny_vl(request, tmp_path_factory):
    from transformers import CONFIG_MAPPING, AutoModelForImageTextToText

    text, vision, carrier = MODELS[request.param]
    config = CONFIG_MAPPING[request.param](
        text_config={**TEXT, **text}, vision_config=vision, image_token_id=100, video_token_id=101, vision_start_token_id=102
    )
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config).eval()
    with torch.no_grad():  # peaked attention and non-trivial norms, so that every RoPE difference shows
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(10.0)
            elif "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    folder = tmp_path_factory.mktemp(request.param) / "model"
    model.save_pretrained(folder)
    return request.param, folder, carrier, text["rope_parameters"]


def _load(folder, config=None):
    from transformers import AutoModelForImageTextToText

    kwargs = {"config": config} if config is not None else {}
    return AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32, **kwargs).eval()


def _logits(model) -> torch.Tensor:
    ids = torch.randint(0, 100, (1, 300), generator=torch.Generator().manual_seed(0))  # text only: no vision tokens
    with torch.no_grad():
        return model(input_ids=ids).logits[0]


def test_extended_and_baked_match_transformers_yarn_with_sections_kept(tiny_vl, tmp_path, capsys):
    from safetensors.numpy import load_file
    from transformers import AutoConfig

    model_type, source, carrier, rope_parameters = tiny_vl
    plain, baked = tmp_path / "plain", tmp_path / "baked"
    for out, extra in ((plain, []), (baked, ["--bake-temperature"])):
        code, _, err = run(["extend", str(source), "--scale", str(SCALE), "-o", str(out), *extra], capsys)
        assert code == 0, err
    written = json.loads((plain / "config.json").read_text())["text_config"]
    for block in (written["rope_parameters"], written["rope_scaling"]):
        assert block["rope_type"] == "yarn" and block["factor"] == SCALE
        assert {k: block[k] for k in ("mrope_section", "mrope_interleaved") if k in block} == {
            k: v for k, v in rope_parameters.items() if k.startswith("mrope")
        }

    config = AutoConfig.from_pretrained(source)
    reference = copy.deepcopy(config.text_config.rope_parameters)
    reference.update(rope_type="yarn", factor=SCALE, original_max_position_embeddings=ORIGINAL)
    config.text_config.rope_parameters = reference
    config.text_config.max_position_embeddings = int(SCALE * ORIGINAL)
    expected = _logits(_load(source, config))
    assert (_logits(_load(source)) - expected).abs().max().item() > 1e-2  # YaRN changes these logits
    assert (_logits(_load(plain)) - expected).abs().max().item() <= 1e-4
    assert (_logits(_load(baked)) - expected).abs().max().item() <= 1e-4

    before, after = load_file(source / "model.safetensors"), load_file(baked / "model.safetensors")
    carriers = [n for n in before if n.endswith(carrier)]  # transformers saves these under the hub's names
    assert len(carriers) == (1 if model_type == "qwen3_5" else 2)  # Qwen3.5's layer 0 has no attention
    for name in carriers:
        assert not (before[name] == after[name]).all(), name  # m went where this family's entry says
    m = rope.get_mscale(SCALE)
    assert json.loads((baked / "config.json").read_text())["yarn_cli"]["baked_attention_factor"] == pytest.approx(m)
