"""Tiny transformers configs, one per supported model type, for tests that build real models."""

from __future__ import annotations

COMMON = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)

IDS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)  # inside the tiny vocabulary
MLA = dict(
    kv_lora_rank=16,
    qk_nope_head_dim=16,
    qk_rope_head_dim=8,
    v_head_dim=16,
    attention_bias=True,
    moe_intermediate_size=32,
    n_routed_experts=2,
    num_experts_per_tok=1,
    first_k_dense_replace=1,
    n_shared_experts=1,
    n_group=1,
    topk_group=1,
    rope_theta=10000.0,
    **IDS,
)
# Qwen3-Next and Qwen3.5: a linear-attention layer, then a full-attention one; and their experts
GATED_DELTANET = dict(
    head_dim=16,
    layer_types=["linear_attention", "full_attention"],
    linear_num_key_heads=2,
    linear_num_value_heads=4,
    linear_key_head_dim=16,
    linear_value_head_dim=16,
    rope_theta=10000.0,
    **IDS,
)
QWEN_MOE = dict(num_experts=2, num_experts_per_tok=1, moe_intermediate_size=32, shared_expert_intermediate_size=32)
TINY = {
    "llama": dict(COMMON, rope_theta=10000.0),
    "mistral": dict(COMMON, rope_theta=10000.0, sliding_window=None),
    "mixtral": dict(COMMON, rope_theta=10000.0, num_local_experts=2, num_experts_per_tok=1, sliding_window=None),
    "qwen2": dict(COMMON, rope_theta=10000.0, use_sliding_window=False),
    "qwen2_moe": dict(
        COMMON,
        rope_theta=10000.0,
        num_experts=2,
        num_experts_per_tok=1,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
        use_sliding_window=False,
    ),
    "qwen3": dict(COMMON, head_dim=16, rope_theta=10000.0, use_sliding_window=False),
    "qwen3_moe": dict(
        COMMON, head_dim=16, rope_theta=10000.0, num_experts=2, num_experts_per_tok=1, moe_intermediate_size=32, use_sliding_window=False
    ),
    "gemma3_text": dict(
        COMMON,
        head_dim=16,
        rope_theta=10000.0,
        rope_local_base_freq=1000.0,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        query_pre_attn_scalar=16,
    ),
    "gemma2": dict(COMMON, head_dim=16, rope_theta=10000.0, sliding_window=64, query_pre_attn_scalar=16),
    "olmo2": dict(COMMON, rope_theta=10000.0),
    "phi3": dict(COMMON, rope_theta=10000.0, pad_token_id=0, original_max_position_embeddings=256),
    "phi": dict(COMMON, rope_theta=10000.0, partial_rotary_factor=0.5, num_key_value_heads=4),
    "gpt_neox": dict(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        rotary_pct=0.5,
        rotary_emb_base=10000,
        use_parallel_residual=True,
        tie_word_embeddings=False,
    ),
    "smollm3": dict(COMMON, rope_theta=10000.0, no_rope_layers=[1, 0], pad_token_id=0, bos_token_id=1, eos_token_id=2),
    "cohere2": dict(
        COMMON,
        rope_theta=10000.0,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    ),
    "llama4_text": dict(
        COMMON,
        head_dim=16,
        rope_theta=10000.0,
        no_rope_layers=[1, 0],
        use_qk_norm=False,
        num_local_experts=1,
        num_experts_per_tok=1,
        intermediate_size_mlp=128,
        moe_layers=[],
        interleave_moe_layer_step=0,
        attention_chunk_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    ),
    "starcoder2": dict(COMMON, rope_theta=10000.0, **IDS),
    "stablelm": dict(COMMON, rope_theta=10000.0, partial_rotary_factor=0.25, **IDS),
    "granite": dict(COMMON, rope_theta=10000.0, attention_multiplier=0.1, **IDS),
    "seed_oss": dict(COMMON, head_dim=16, rope_theta=10000.0, **IDS),
    "ernie4_5": dict(COMMON, head_dim=16, rope_theta=10000.0, **IDS),
    "exaone4": dict(COMMON, rope_theta=10000.0, sliding_window=64, layer_types=["sliding_attention", "full_attention"], **IDS),
    "glm4_moe": dict(
        COMMON,
        head_dim=16,
        partial_rotary_factor=0.5,
        use_qk_norm=True,
        attention_bias=True,
        n_routed_experts=2,
        num_experts_per_tok=1,
        first_k_dense_replace=1,
        moe_intermediate_size=32,
        n_shared_experts=1,
        n_group=1,
        topk_group=1,
        rope_theta=10000.0,
        **IDS,
    ),
    "glm4": dict(COMMON, head_dim=16, partial_rotary_factor=0.5, attention_bias=True, rope_theta=10000.0, **IDS),
    "minimax_m2": dict(COMMON, head_dim=16, rotary_dim=8, num_local_experts=2, num_experts_per_tok=1, rope_theta=10000.0, **IDS),
    # hybrid: a linear-attention (Gated DeltaNet) layer without RoPE, then a full-attention one with it
    "qwen3_next": dict(COMMON, **GATED_DELTANET, **QWEN_MOE, partial_rotary_factor=0.5),
    # Qwen3.5: Qwen3-Next's layout (gated q_proj, (1 + w) norms) in a dense and an MoE model, partial rotary 0.25
    "qwen3_5_text": dict(COMMON, **GATED_DELTANET, partial_rotary_factor=0.25),
    "qwen3_5_moe_text": dict(COMMON, **GATED_DELTANET, **QWEN_MOE, partial_rotary_factor=0.25),
    # sliding layers at their own base between full-attention ones; YaRN goes on the full ones only
    "olmo3": dict(COMMON, rope_theta=10000.0, sliding_window=64, layer_types=["sliding_attention", "full_attention"], **IDS),
    # EXAONE MoE rotates only its sliding layers, as EXAONE 4 does
    "exaone_moe": dict(
        COMMON,
        rope_theta=10000.0,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        num_experts=2,
        num_experts_per_tok=1,
        moe_intermediate_size=32,
        **IDS,
    ),
    # hybrids: a layer holding a fixed state (convolution, lightning attention, Mamba-2), then an attention layer
    "lfm2": dict(COMMON, rope_theta=10000.0, layer_types=["conv", "full_attention"], **IDS),
    "lfm2_moe": dict(
        COMMON,
        rope_theta=10000.0,
        layer_types=["conv", "full_attention"],
        num_experts=2,
        num_experts_per_tok=1,
        moe_intermediate_size=32,
        num_dense_layers=1,
        **IDS,
    ),
    "minimax": dict(
        COMMON, head_dim=16, rope_theta=10000.0, layer_types=["linear_attention", "full_attention"], num_local_experts=2, num_experts_per_tok=1, **IDS
    ),
    "granitemoehybrid": dict(
        COMMON,
        rope_theta=10000.0,
        layer_types=["mamba", "attention"],
        position_embedding_type="rope",
        num_local_experts=2,
        num_experts_per_tok=1,
        mamba_n_heads=8,
        mamba_d_head=16,
        **IDS,
    ),
    # every layer runs attention beside a Mamba-2 mixer; key_multiplier scales k before RoPE
    "falcon_h1": dict(COMMON, head_dim=16, rope_theta=10000.0, key_multiplier=0.5, **IDS),
    # Falcon-40B's grouped qkv; the other two layouts are tested on overrides of this one
    "falcon": dict(
        vocab_size=128,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_kv_heads=2,
        new_decoder_architecture=True,
        bias=True,
        max_position_embeddings=256,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        **IDS,
    ),
    # ships NTK-alpha as its own checkpoints do ("dynamic" with a fixed alpha); q/k norms after RoPE
    "hunyuan_v1_dense": dict(
        COMMON, head_dim=16, rope_theta=10000.0, use_qk_norm=True, rope_scaling={"type": "dynamic", "alpha": 1000.0, "factor": 1.0}, **IDS
    ),
    "hunyuan_v1_moe": dict(
        COMMON,
        head_dim=16,
        rope_theta=10000.0,
        num_experts=2,
        moe_topk=1,
        use_qk_norm=True,
        rope_scaling={"type": "dynamic", "alpha": 1000.0, "factor": 1.0},
        **IDS,
    ),
    # MLA: heads of 16 no-RoPE + 8 rotary dims, one shared rotary key after a 16-wide latent
    "deepseek_v3": dict(COMMON, num_key_value_heads=4, q_lora_rank=32, **MLA),
    "deepseek_v2": dict(COMMON, num_key_value_heads=4, q_lora_rank=None, **MLA),
    "glm4_moe_lite": dict(COMMON, num_key_value_heads=4, q_lora_rank=32, **MLA),
    # MLA plus a sparse-attention indexer that keeps 64 of the keys: beyond 64 tokens its choice shapes the logits
    "deepseek_v32": dict(COMMON, num_key_value_heads=4, q_lora_rank=32, index_n_heads=2, index_head_dim=16, index_topk=64, **MLA),
    "glm_moe_dsa": dict(COMMON, num_key_value_heads=4, q_lora_rank=32, index_n_heads=2, index_head_dim=16, index_topk=64, **MLA),
    # gpt-oss ships YaRN already (its config default); the tiny one starts unscaled so extend has work to do
    "gpt_oss": dict(
        COMMON,
        head_dim=16,
        num_local_experts=2,
        num_experts_per_tok=1,
        sliding_window=32,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ),
}
# Model types of registry entries that are not causal-LM text models on their own.
# Model types that name a family's config but have no transformers class of their own (Kimi-K2 runs as DeepSeek-V3).
NO_TRANSFORMERS_CLASS = {"kimi_k2"}
MULTIMODAL = {"gemma3", "llama4", "qwen3_5", "qwen3_5_moe", "qwen2_vl", "qwen2_vl_text", "qwen2_5_vl", "qwen2_5_vl_text", "qwen3_vl", "qwen3_vl_text"}


def build_model(model_type: str, seed: int = 0, qk_scale: float = 1.0, **overrides):
    """A tiny random model of ``model_type``. ``qk_scale`` multiplies the q/k projections: peaked attention, so that
    a bake into the wrong rows or layers shows in the logits instead of vanishing in near-uniform attention."""
    import torch
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    config = CONFIG_MAPPING[model_type](**{**TINY[model_type], **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    with torch.no_grad():  # non-trivial norms so qk-norm baking is exercised
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
            elif any(part in name for part in ("q_proj", "k_proj", "query_key_value", "qkv_proj", "q_b_proj", "kv_a_proj_with_mqa")):
                param.mul_(qk_scale)
    return model
