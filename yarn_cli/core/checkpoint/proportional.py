"""Gemma 4's proportional RoPE, read as transformers computes it (``_compute_proportional_rope_parameters``).

The full-attention layers have a head of their own width H (``global_head_dim``; transformers saves it as
``per_layer_config``). Of its H/2 rotary pairs, the first P = int(partial_rotary_factor·H/2) rotate with
θ_i = base^(-2i/H); the others get frequency zero. Pair i spans dims i and i + H/2 (rotate-half over the whole head).
Those P frequencies are plain RoPE at the base base^(2P/H) over 2P rotary dims, which is how the rest of the tool
reads them; the pairing over the whole head is what no YaRN block can express, which the family entry says.
"""

from __future__ import annotations

from typing import Any

from yarn_cli.core.checkpoint import layer_types
from yarn_cli.core.rope.spec import Scaling
from yarn_cli.errors import FormatError

# transformers' Gemma4TextConfig default when a config names no global head width
DEFAULT_GLOBAL_HEAD_DIM = 512


def global_head_dim(cfg: dict[str, Any]) -> int:
    """H of the full-attention layers: ``per_layer_config``'s head_dim (as transformers saves it), else
    ``global_head_dim`` (as the hub's configs say), else transformers' default."""
    value = layer_types.override(cfg, "head_dim")
    if value is None:
        value = cfg.get("global_head_dim", DEFAULT_GLOBAL_HEAD_DIM)
    if isinstance(value, bool) or not isinstance(value, int) or value < 2 or value % 2:
        raise FormatError(f"config.json: the full-attention head width must be an even whole number, got {value!r}")
    return value


def read(cfg: dict[str, Any], block: dict[str, Any], theta: float, warnings: list[str]) -> tuple[float, int, int, Scaling | None]:
    """(base over the rotating pairs, H, rotary dims 2P, the scaling left: linear when the block has a factor)."""
    head_dim = global_head_dim(cfg)
    proportion = block.get("partial_rotary_factor", 1.0)
    if isinstance(proportion, bool) or not isinstance(proportion, (int, float)) or not 0 < proportion <= 1:
        raise FormatError(f"config.json: proportional partial_rotary_factor must be in (0, 1], got {proportion!r}")
    pairs = int(proportion * head_dim // 2)
    if pairs < 1:
        raise FormatError(f"config.json: proportional RoPE with partial_rotary_factor {proportion} rotates no pair of {head_dim} dims")
    base = float(theta) ** (2 * pairs / head_dim)
    warnings.append(
        f"proportional RoPE on the full-attention layers: {pairs} of {head_dim // 2} pairs rotate, with θ_i = {theta:g}^(-2i/{head_dim}) "
        f"(the table shows them as base {base:.6g} over {2 * pairs} dims), each pairing dims i and i+{head_dim // 2}; "
        "the other pairs have frequency zero"
    )
    factor = block.get("factor", 1.0)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
        raise FormatError(f"config.json: proportional factor must be a positive number, got {factor!r}")
    # transformers divides every frequency by the factor: a linear scaling on top
    scaling = None if factor == 1 else Scaling("linear", float(factor), None, {}, "rope_parameters.full_attention")
    return base, head_dim, 2 * pairs, scaling
