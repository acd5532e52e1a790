"""The math core against the golden values of docs/conventions.md §2 and transformers' ROPE_INIT_FUNCTIONS, number for number."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from real_configs import (
    BASE_CONFIGS,
    DEEPSEEK_V3,
    GPT_OSS_20B,
    LLAMA31_8B,
    PHI3_MINI_128K,
    QWEN3_8B_YARN,
)

from yarn_cli.core.checkpoint import hf_config
from yarn_cli.core.rope import analysis
from yarn_cli.core.rope import frequencies as rope

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers import CONFIG_MAPPING  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402

# transformers computes in float32; our float64 values must agree to float32 precision.
RTOL = 2e-6


def hf_config_object(config: dict):
    data = copy.deepcopy(config)
    cls = CONFIG_MAPPING[data.pop("model_type")]
    data.pop("architectures", None)
    return cls(**data)


def transformers_rope(config: dict, rope_type: str, seq_len=None):
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[rope_type](hf_config_object(config), device="cpu", seq_len=seq_len)
    return inv_freq.double().numpy(), float(attention_factor)


def our_spec(config: dict, original_context: int | None = None):
    specs, _ = hf_config.read_rope_specs(config, original_context)
    return specs[0]


@pytest.mark.parametrize(
    "base, L, D, expected",
    [
        (1e4, 4096, 128, (20, 46)),  # Llama-2
        (1e4, 8192, 128, (25, 50)),  # Mistral
        (5e5, 8192, 128, (18, 35)),  # Llama-3
        (1e6, 32768, 128, (23, 40)),  # Qwen2.5 / Qwen3
        (1e5, 8192, 64, (10, 20)),  # SmolLM2-135M
    ],
)
def test_spec_golden_correction_range(base, L, D, expected):
    assert rope.yarn_correction_range(D, base, L) == expected


@pytest.mark.parametrize("scale, m", [(2, 1.0693), (4, 1.1386), (8, 1.2079), (16, 1.2773), (32, 1.3466)])
def test_spec_golden_attention_factor(scale, m):
    assert round(rope.get_mscale(scale), 4) == m
    assert rope.get_mscale(1) == 1.0 and rope.get_mscale(0.5) == 1.0


def test_thresholds_are_on_rotations_not_wavelength_ratio():
    # Pairs with r > beta_fast keep θ; pairs with r < beta_slow are fully interpolated.
    result = rope.yarn(1e4, 128, 4096, 8)
    theta = rope.inv_freq(1e4, 128)
    r = rope.rotations(theta, 4096)
    assert np.all(result.inv_freq[r > 32 * 1.5] == theta[r > 32 * 1.5])
    np.testing.assert_allclose(result.inv_freq[r < 0.5], theta[r < 0.5] / 8)


@pytest.mark.parametrize("name", sorted(BASE_CONFIGS))
@pytest.mark.parametrize("scale", [2.0, 4.0, 8.0, 16.0, 32.0])
def test_yarn_matches_transformers(name, scale):
    config, dim = BASE_CONFIGS[name]
    spec = our_spec(config)
    assert spec.rotary_dim == dim
    with_yarn = {
        **config,
        "max_position_embeddings": int(spec.original_context * scale),
        "rope_scaling": {"rope_type": "yarn", "factor": scale, "original_max_position_embeddings": spec.original_context},
    }
    expected, expected_m = transformers_rope(with_yarn, "yarn")
    ours = analysis.method_frequencies(spec, "yarn", scale)
    np.testing.assert_allclose(ours.inv_freq, expected, rtol=RTOL)
    assert ours.attention_factor == pytest.approx(expected_m, rel=1e-12)
    by_parts = analysis.method_frequencies(spec, "by-parts", scale)
    np.testing.assert_allclose(by_parts.inv_freq, expected, rtol=RTOL)
    assert by_parts.attention_factor == 1.0


@pytest.mark.parametrize("name", sorted(BASE_CONFIGS))
def test_linear_and_dynamic_match_transformers(name):
    config, _ = BASE_CONFIGS[name]
    spec = our_spec(config)
    scale = 4.0
    expected, _ = transformers_rope({**config, "rope_scaling": {"rope_type": "linear", "factor": scale}}, "linear")
    np.testing.assert_allclose(analysis.method_frequencies(spec, "linear", scale).inv_freq, expected, rtol=RTOL)
    dynamic_config = {**config, "rope_scaling": {"rope_type": "dynamic", "factor": scale}}
    for seq_len in (spec.max_context // 2, spec.max_context, spec.max_context * 3):
        expected, _ = transformers_rope(dynamic_config, "dynamic", seq_len=seq_len)
        ours = rope.dynamic_ntk(spec.base, spec.rotary_dim, scale, spec.max_context, seq_len)
        np.testing.assert_allclose(ours.inv_freq, expected, rtol=RTOL)


def test_ntk_aware_base_formula():
    assert rope.ntk_aware_base(1e4, 128, 4) == pytest.approx(1e4 * 4 ** (128 / 126))
    # dynamic at L' = s·L with factor s equals transformers' formula b·(s·s - (s-1))^(D/(D-2))
    assert rope.dynamic_ntk_base(1e4, 128, 2, 4096, 8192) == pytest.approx(1e4 * 3 ** (128 / 126))


def test_existing_llama3_scaling_matches_transformers():
    expected, m = transformers_rope(LLAMA31_8B, "llama3")
    result = analysis.existing_frequencies(our_spec(LLAMA31_8B))
    np.testing.assert_allclose(result.inv_freq, expected, rtol=RTOL)
    assert result.attention_factor == m == 1.0


@pytest.mark.parametrize("seq_len", [None, 2048, 4096, 8192])
def test_existing_longrope_matches_transformers(seq_len):
    spec = our_spec(PHI3_MINI_128K)
    assert spec.original_context == 4096 and spec.scaling.type == "longrope"
    expected, m = transformers_rope(PHI3_MINI_128K, "longrope", seq_len=seq_len)
    # transformers picks long_factor only when seq_len > original; our default view is the long regime.
    result = analysis.existing_frequencies(spec, seq_len=seq_len or 1)
    np.testing.assert_allclose(result.inv_freq, expected, rtol=RTOL)
    assert result.attention_factor == pytest.approx(m)


@pytest.mark.parametrize("config", [QWEN3_8B_YARN, DEEPSEEK_V3, GPT_OSS_20B], ids=["qwen3-yarn", "deepseek-v3", "gpt-oss"])
def test_existing_yarn_matches_transformers(config):
    expected, m = transformers_rope(config, "yarn")
    result = analysis.existing_frequencies(our_spec(config))
    np.testing.assert_allclose(result.inv_freq, expected, rtol=RTOL)
    assert result.attention_factor == pytest.approx(m, rel=1e-12)


# The declared factor when a yarn block leaves things out: one rule (Scaling.declared_factor) for every reader of it
DECLARED = {
    "factor-and-original": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192},
    "original-only": {"rope_type": "yarn", "factor": None, "original_max_position_embeddings": 8192},
    "factor-only": {"rope_type": "yarn", "factor": 4.0},
}


@pytest.mark.parametrize("block", sorted(DECLARED))
def test_declared_factor_is_the_one_transformers_computes(block):
    """transformers' _compute_yarn_parameters on a block with and without factor and original length: its attention
    factor is 0.1·ln s + 1 of the s it took, and its inv_freq uses that s; ours must be the same s everywhere."""
    from yarn_cli.core.rope import variants
    from yarn_cli.core.rope.scalars import get_mscale

    config = {**QWEN3_8B_YARN, "max_position_embeddings": 32768, "rope_scaling": dict(DECLARED[block])}
    expected, m = transformers_rope(config, "yarn")
    spec = our_spec(config)
    factor = spec.scaling.declared_factor(spec.max_context)
    assert get_mscale(factor) == pytest.approx(m, rel=1e-12)
    result = analysis.existing_frequencies(spec)
    np.testing.assert_allclose(result.inv_freq, expected, rtol=RTOL)
    assert result.attention_factor == pytest.approx(m, rel=1e-12)
    assert variants.declared(spec).factor == factor
    # an --original-context override changes the L shown, not the s a runtime computes
    overridden = our_spec(config, original_context=4096)
    assert overridden.scaling.declared_factor(overridden.max_context) == factor


def test_deepseek_mscale_and_softmax_scale():
    spec = our_spec(DEEPSEEK_V3)
    assert (spec.rotary_dim, spec.original_context, spec.scaling.factor) == (64, 4096, 40.0)
    # mscale == mscale_all_dim: cos/sin carry 1, the softmax scale carries get_mscale(40, 1)²
    assert rope.yarn_attention_factor(40, None, 1.0, 1.0) == 1.0
    assert rope.yarn_attention_factor(40, None, 0.707, 1.0) == pytest.approx(rope.get_mscale(40, 0.707) / rope.get_mscale(40, 1.0))


def test_gpt_oss_untruncated_range_differs_from_truncated():
    low_t, high_t = rope.yarn_correction_range(64, 150000, 4096, truncate=True)
    low_f, high_f = rope.yarn_correction_range(64, 150000, 4096, truncate=False)
    assert (low_t, high_t) == (int(np.floor(low_f)), int(np.ceil(high_f)))
    assert low_f != low_t


def test_attention_factor_override_wins():
    assert rope.yarn_attention_factor(16, attention_factor=1.0) == 1.0
    assert rope.yarn(1e4, 128, 4096, 16, attention_factor=1.0).attention_factor == 1.0


def test_llama3_ramp_is_interpolated_share():
    result = rope.llama3(5e5, 128, 8, 8192, 1, 4)
    theta = rope.inv_freq(5e5, 128)
    np.testing.assert_allclose(result.inv_freq, theta / 8 * result.ramp + theta * (1 - result.ramp), rtol=1e-12)


def test_bad_inputs_raise_the_projects_format_error():
    from yarn_cli.errors import FormatError

    with pytest.raises(FormatError):
        rope.inv_freq(1e4, 7)
    with pytest.raises(FormatError):
        rope.inv_freq(1.0, 64)
    with pytest.raises(FormatError):
        rope.longrope(1e4, 8, [1.0, 2.0], 2, 4096)
