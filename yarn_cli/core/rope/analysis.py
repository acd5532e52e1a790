"""Per-dimension analysis of a RoPE family under a scaling: what `inspect` shows and `--json` returns."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from yarn_cli.core.checkpoint import kv_cache
from yarn_cli.core.rope import freq_factors, lengths
from yarn_cli.core.rope import frequencies as rope
from yarn_cli.core.rope.spec import ModelSummary, RopeSpec, Scaling
from yarn_cli.errors import InputError

METHODS = ("yarn", "linear", "ntk", "dynamic", "by-parts")


@dataclass(frozen=True)
class YarnOptions:
    beta_fast: float = rope.BETA_FAST_DEFAULT
    beta_slow: float = rope.BETA_SLOW_DEFAULT
    truncate: bool = True


def method_frequencies(
    spec: RopeSpec, method: str, scale: float, options: YarnOptions = YarnOptions(), seq_len: float | None = None
) -> rope.ScaledFrequencies:
    """A fresh scaling by ``method`` at ``scale`` from the spec's original (trained) context.

    ``dynamic`` is evaluated at ``seq_len`` (default: the new length s·L), where it differs from RoPE.
    """
    lengths.check_scale(scale, spec.original_context)
    base, dim, original = spec.base, spec.rotary_dim, spec.original_context
    if method == "yarn":
        return rope.yarn(base, dim, original, scale, options.beta_fast, options.beta_slow, options.truncate)
    if method == "by-parts":
        return rope.ntk_by_parts(base, dim, original, scale, options.beta_fast, options.beta_slow, options.truncate)
    if method == "linear":
        return rope.linear(base, dim, scale)
    if method == "ntk":
        return rope.ntk_aware(base, dim, scale)
    if method == "dynamic":
        return rope.dynamic_ntk(base, dim, scale, original, seq_len if seq_len is not None else scale * original)
    raise InputError(f"--method {method!r} is not one of {', '.join(METHODS)}, all")


def existing_frequencies(spec: RopeSpec, seq_len: float | None = None) -> rope.ScaledFrequencies:
    """What a runtime computes for the scaling the checkpoint already declares (transformers' conventions)."""
    scaling = spec.scaling
    base, dim = spec.base, spec.rotary_dim
    divisors = freq_factors.divisors(spec.freq_factors)
    if scaling is None or scaling.source == freq_factors.SOURCE:  # the factors alone: θ_i / f_i
        return rope.ScaledFrequencies(
            "default" if scaling is None else scaling.type, rope.linear(base, dim, 1.0, divisors).inv_freq_values, 1.0, base=base
        )
    params = scaling.params
    original = scaling.original_context or spec.max_context
    factor = scaling.declared_factor(spec.max_context)
    if scaling.type == "yarn":
        return rope.yarn(
            base,
            dim,
            original,
            factor,
            beta_fast=params.get("beta_fast") or rope.BETA_FAST_DEFAULT,
            beta_slow=params.get("beta_slow") or rope.BETA_SLOW_DEFAULT,
            truncate=params.get("truncate", True) if params.get("truncate") is not None else True,
            attention_factor=params.get("attention_factor"),
            mscale=params.get("mscale"),
            mscale_all_dim=params.get("mscale_all_dim"),
            divisors=divisors,
        )
    if scaling.type == "linear":
        return rope.linear(base, dim, factor, divisors)
    if scaling.type == "dynamic":
        return rope.dynamic_ntk(base, dim, factor, spec.max_context, seq_len or spec.max_context)
    if scaling.type == "llama3":
        return rope.llama3(
            base,
            dim,
            factor,
            original,
            low_freq_factor=params.get("low_freq_factor", 1.0),
            high_freq_factor=params.get("high_freq_factor", 4.0),
        )
    if scaling.type == "longrope":
        use_long = seq_len is None or seq_len > original
        ext = params.get("long_factor" if use_long else "short_factor")
        if ext is None:
            raise InputError(f"{scaling.source}: longrope needs long_factor and short_factor lists")
        return rope.longrope(base, dim, ext, factor, original, params.get("attention_factor"))
    raise InputError(f"{scaling.source}: cannot evaluate rope type {scaling.type!r}")


def dimension_rows(spec: RopeSpec, result: rope.ScaledFrequencies, scale: float) -> list[dict[str, Any]]:
    """One row per pair: θ, λ, r = L/λ, ramp, region, θ', λ' (the stable ``dimensions`` JSON list).

    Methods without a ramp of their own (PI, NTK, dynamic) get the share of the full θ/s shift each
    pair received, measured in log space: log(θ/θ') / log(s).
    """
    theta = rope.inv_freq_values(spec.base, spec.rotary_dim)
    wavelength = rope.wavelength_values(theta)
    turns = rope.rotation_values(theta, spec.original_context)
    if result.ramp_values is not None:
        ramp = result.ramp_values
    elif scale > 1:
        ramp = tuple(min(max(math.log(t / t2) / math.log(scale), 0.0), 1.0) for t, t2 in zip(theta, result.inv_freq_values))
    else:
        ramp = tuple(0.0 for _ in theta)
    region = rope.regions(ramp)
    scaled_wavelength = rope.wavelength_values(result.inv_freq_values)
    return [
        {
            "pair": i,
            "inv_freq": theta[i],
            "wavelength": wavelength[i],
            "rotations": turns[i],
            "ramp": float(ramp[i]),
            "region": region[i],
            "scaled_inv_freq": float(result.inv_freq_values[i]),
            "scaled_wavelength": scaled_wavelength[i],
        }
        for i in range(len(theta))
    ]


def scaling_summary(scaling: Scaling | None) -> dict[str, Any] | None:
    return scaling.to_json() if scaling else None


def _model_json(model: ModelSummary) -> dict[str, Any]:
    return {
        "layers": model.layers,
        "attention_heads": model.attention_heads,
        "kv_heads": model.kv_heads,
        "hidden_size": model.hidden_size,
        **{k: v for k, v in model.extra.items() if k != "safetensors_metadata"},
    }


def _declared(spec: RopeSpec) -> dict[str, Any]:
    """No new scale asked for: the table of what the declared scaling (or plain RoPE) does now."""
    if spec.scaling is None:
        return {"dimensions": dimension_rows(spec, existing_frequencies(spec), 1.0)}
    result = existing_frequencies(spec)
    shown_scale = spec.scaling.declared_factor(spec.max_context)
    report = {
        "method": result.method,
        "attention_factor": result.attention_factor,
        "existing": True,
        "existing_factor": shown_scale,
        "dimensions": dimension_rows(spec, result, shown_scale),
    }
    if result.low is not None:
        report["correction_range"] = {"low": result.low, "high": result.high}
    if spec.softmax_mscale_key:
        report["softmax_mscale"] = spec.softmax_mscale()
    return report


def _fresh(spec: RopeSpec, scale: float, method: str, options: YarnOptions) -> dict[str, Any]:
    """The table of a new scaling by ``method`` (or every method, "all", with YaRN's table as the primary)."""
    names = METHODS if method == "all" else (method,)
    per_method = {}
    for name in names:
        result = method_frequencies(spec, name, scale, options)
        per_method[name] = (result, dimension_rows(spec, result, scale))
    primary_name = "yarn" if method == "all" else method
    primary, rows = per_method[primary_name]
    report: dict[str, Any] = {
        "method": primary_name,
        "attention_factor": primary.attention_factor,
        "logit_multiplier": primary.attention_factor**2,
        "target_context": lengths.target_length(spec.original_context, scale),
        "dimensions": rows,
    }
    if primary.low is not None:
        report["correction_range"] = {"low": primary.low, "high": primary.high}
    if spec.softmax_mscale_key and primary_name == "yarn":  # extend writes the family's pair: cos/sin 1, softmax m²
        report.update(attention_factor=1.0, softmax_mscale=spec.softmax_mscale(scale))
    if method == "all":
        report["methods"] = {
            name: {
                "attention_factor": result.attention_factor,
                "base": result.base,
                "scaled_inv_freq": [row["scaled_inv_freq"] for row in rows_],
                "scaled_wavelength": [row["scaled_wavelength"] for row in rows_],
            }
            for name, (result, rows_) in per_method.items()
        }
    return report


def inspect_report(model: ModelSummary, scale: float | None, method: str = "yarn", options: YarnOptions = YarnOptions()) -> dict[str, Any]:
    """The `inspect --json` object. Stable keys: rope.*, scale, attention_factor, dimensions."""
    spec = model.rope
    if scale is not None:
        lengths.check_scale(scale, spec.original_context)
    target = lengths.target_length(spec.original_context, scale) if scale is not None else None
    report: dict[str, Any] = {
        "source": model.source,
        "format": model.format,
        "architecture": model.architecture,
        "model": _model_json(model),
        "tensors": {
            "count": model.tensors.count,
            "parameters": model.tensors.parameters,
            "bytes": model.tensors.bytes,
            "dtypes": model.tensors.dtypes,
            "files": model.tensors.files,
        },
        "rope": spec.to_json(),
        "ropes": [s.to_json() for s in model.ropes],
        "kv_cache": kv_cache.kv_cache_report(model.attention, spec.original_context, target),
        "warnings": list(model.warnings),
        "scale": scale,
        "method": None,
        "attention_factor": None,
        "dimensions": [],
    }
    report.update(_declared(spec) if scale is None else _fresh(spec, scale, method, options))
    return report
