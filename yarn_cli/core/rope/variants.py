"""A RoPE variant as a value: the frequencies and the cos/sin factor one evaluation runs a checkpoint's
weights under, plus the parameters that produced them, so that a runtime which only takes parameters
(llama.cpp's context, vLLM's config overrides) can be asked for exactly the same thing.

Every variant verify, parity and tune use is built here, from the one math core (``rope``, ``analysis``):
the checkpoint's declared scaling, the baseline (scaling removed, a baked m divided back out), any YaRN
(s, m, β_fast, β_slow, original length) and plain linear interpolation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from yarn_cli.core.rope import analysis, freq_factors
from yarn_cli.core.rope import frequencies as rope
from yarn_cli.core.rope.scalars import BETA_FAST_DEFAULT, BETA_SLOW_DEFAULT, get_mscale
from yarn_cli.core.rope.spec import RopeSpec
from yarn_cli.core.units import split_names
from yarn_cli.errors import InputError

# kind: "declared" (as the checkpoint says: a runtime reads it itself), "none", "linear", "yarn", or
# "custom" (frequencies only, no parameters: only engines that take frequencies can run it).
KINDS = ("declared", "none", "linear", "yarn", "custom")


@dataclass(frozen=True)
class RopeVariant:
    name: str
    kind: str
    inv_freq: tuple[float, ...]  # θ per rotary pair
    attention_factor: float  # what cos and sin are multiplied by, on these weights (a baked m already counted)
    base: float  # the RoPE base the frequencies start from
    factor: float = 1.0  # s (yarn, linear)
    original_context: int | None = None  # L (yarn)
    beta_fast: float = BETA_FAST_DEFAULT
    beta_slow: float = BETA_SLOW_DEFAULT
    truncate: bool = True
    baked: float | None = None  # the m the checkpoint's q/k weights already carry
    described: str | None = None  # a label where the kind alone misleads (NTK-aware is plain RoPE at another base)
    # MLA (DeepSeek): M, whose square multiplies the softmax scale, so every dim of q·k, not only the rotary ones
    softmax_mscale: float = 1.0

    @property
    def effective_m(self) -> float:
        """The attention factor the rotary dims end up with: cos/sin's factor, MLA's softmax factor, any m baked in."""
        return self.attention_factor * self.softmax_mscale * (self.baked or 1.0)

    @property
    def label(self) -> str:
        if self.described:
            return self.described
        if self.kind == "yarn":
            return f"yarn x{self.factor:g} (m {self.effective_m:.4f})"
        if self.kind == "linear":
            return f"linear x{self.factor:g}"
        if self.kind == "none":
            return "no scaling" + (f" (cos/sin x {self.attention_factor:.4f})" if self.attention_factor != 1.0 else "")
        return self.kind

    def same_rope(self, other: RopeVariant) -> bool:
        """Whether both run the same frequencies and factor (then no evaluation can tell them apart)."""
        return (
            math.isclose(self.attention_factor, other.attention_factor, rel_tol=1e-12)
            and math.isclose(self.softmax_mscale, other.softmax_mscale, rel_tol=1e-12)
            and len(self.inv_freq) == len(other.inv_freq)
            and all(math.isclose(x, y, rel_tol=1e-12) for x, y in zip(self.inv_freq, other.inv_freq))
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "label": self.label,
            "theta": self.base,
            "attention_factor": self.attention_factor,
            "effective_m": self.effective_m,
        }
        if self.kind in ("yarn", "linear") or self.factor != 1.0:
            data["factor"] = self.factor
        if self.kind == "yarn" or self.original_context is not None:
            data.update(original_context=self.original_context, beta_fast=self.beta_fast, beta_slow=self.beta_slow, truncate=self.truncate)
        if self.softmax_mscale != 1.0:
            data["softmax_mscale"] = self.softmax_mscale
        return data


def declared(spec: RopeSpec, baked: float | None = None, seq_len: int | None = None, name: str = "extended") -> RopeVariant:
    """The scaling the checkpoint declares, as transformers computes it (dynamic scaling at ``seq_len``)."""
    computed = analysis.existing_frequencies(spec, seq_len)
    scaling = spec.scaling
    fields: dict[str, Any] = {}
    if scaling is not None and scaling.type in ("yarn", "linear"):
        fields["factor"] = scaling.declared_factor(spec.max_context)
    if scaling is not None and scaling.type == "yarn":
        params = scaling.params
        fields.update(
            original_context=scaling.original_context or spec.max_context,
            beta_fast=params.get("beta_fast") or BETA_FAST_DEFAULT,
            beta_slow=params.get("beta_slow") or BETA_SLOW_DEFAULT,
            truncate=params.get("truncate") if params.get("truncate") is not None else True,
        )
    return RopeVariant(
        name,
        "declared",
        tuple(computed.inv_freq_values),
        computed.attention_factor,
        spec.base,
        baked=baked,
        softmax_mscale=spec.softmax_mscale() or 1.0,
        **fields,
    )


def baseline(spec: RopeSpec, baked: float | None = None, name: str = "baseline") -> RopeVariant:
    """The model every result is compared with: the same weights under plain RoPE at the checkpoint's base.
    cos/sin carry 1, or 1/m where q/k have m baked in, so the baseline equals the unextended model either way (MLA:
    the softmax factor undoes the m its bake put into every q row)."""
    kept = f"no scaling beyond rope_freqs' {spec.freq_factors.label}" if spec.freq_factors is not None else None
    cos_sin, softmax = on_baked(spec, baked, 1.0, 1.0)
    return RopeVariant(name, "none", _plain(spec), cos_sin, spec.base, baked=baked, described=kept, softmax_mscale=softmax)


def on_baked(spec: RopeSpec, baked: float | None, cos_sin: float, softmax: float) -> tuple[float, float]:
    """(cos/sin factor, softmax factor M) that give weights carrying a baked m the factors ``cos_sin`` and ``softmax``
    wanted on unbaked ones. q and k each carry m, so cos/sin divide it out; MLA's bake put M² into every q row and
    (m/M)² into the shared rotary key, so the softmax divides M out and cos/sin the ratio m/M."""
    if not baked:
        return cos_sin, softmax
    if spec.softmax_mscale_key:
        part = spec.baked_softmax_mscale or float(baked)
        return cos_sin * part / float(baked), softmax / part
    return cos_sin / float(baked), softmax


def _plain(spec: RopeSpec, base: float | None = None) -> tuple[float, ...]:
    """Plain RoPE at ``base`` (default the spec's): θ_i, divided by any per-pair factors the runtime always applies."""
    return rope.linear(base or spec.base, spec.rotary_dim, 1.0, freq_factors.divisors(spec.freq_factors)).inv_freq_values


def yarn(
    spec: RopeSpec,
    scale: float,
    m: float | None = None,
    *,
    beta_fast: float = BETA_FAST_DEFAULT,
    beta_slow: float = BETA_SLOW_DEFAULT,
    original_context: int | None = None,
    truncate: bool = True,
    baked: float | None = None,
    name: str | None = None,
) -> RopeVariant:
    """YaRN by ``scale`` from the trained length, with the effective attention factor ``m`` (default the
    paper's 0.1·ln s + 1); on baked weights cos/sin carry m divided by the baked one. MLA carries it in the softmax
    scale instead, on every dim, as the extend of those families writes it (DeepSeek's mscale pair)."""
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise InputError(f"a YaRN variant needs a positive finite scale, not {scale!r}")
    if m is not None and not (math.isfinite(m) and m > 0):
        raise InputError(f"a YaRN variant needs a positive finite attention factor, not {m!r}")
    original = original_context or spec.original_context
    computed = rope.yarn(
        spec.base, spec.rotary_dim, original, scale, beta_fast, beta_slow, truncate, divisors=freq_factors.divisors(spec.freq_factors)
    )
    effective = get_mscale(scale) if m is None else float(m)
    wanted = (1.0, effective) if spec.softmax_mscale_key else (effective, 1.0)
    cos_sin, softmax = on_baked(spec, baked, *wanted)
    return RopeVariant(
        name or f"yarn-x{scale:g}-m{effective:.4f}",
        "yarn",
        tuple(computed.inv_freq_values),
        cos_sin,
        spec.base,
        float(scale),
        original,
        beta_fast,
        beta_slow,
        truncate,
        baked,
        softmax_mscale=softmax,
    )


def linear(spec: RopeSpec, scale: float, baked: float | None = None, name: str | None = None) -> RopeVariant:
    """Position interpolation: every frequency divided by s; cos/sin carry 1 (a baked m stays in)."""
    computed = rope.linear(spec.base, spec.rotary_dim, scale, freq_factors.divisors(spec.freq_factors))
    return RopeVariant(name or f"linear-x{scale:g}", "linear", tuple(computed.inv_freq_values), 1.0, spec.base, float(scale), baked=baked)


def renamed(variant: RopeVariant, name: str, **changes: Any) -> RopeVariant:
    return replace(variant, name=name, **changes)


VARIANT_NAMES = "extended, baseline, paper or m=X"


def parse_name(name: str) -> tuple[str, float | None]:
    """(form, m) of a variant name: ("extended"|"baseline"|"paper", None) or ("m", X); refused otherwise."""
    text = name.strip()
    if text in ("extended", "baseline", "paper"):
        return text, None
    if text.startswith("m="):
        try:
            m = float(text[2:])
        except ValueError:
            m = math.nan
        if math.isfinite(m) and m > 0:
            return "m", m
        raise InputError(f"variant {name!r}: m=X takes a positive number, e.g. m=1.035")
    raise InputError(f"variant {name!r}: use {VARIANT_NAMES}")


def parse_names(names: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list of variant names, checked: two or more, different, each well formed."""
    parts = split_names(names)
    if len(parts) < 2 or len(set(parts)) != len(parts):
        raise InputError(
            f"--variants {','.join(parts)}: name two or more different variants ({VARIANT_NAMES}), "
            "the one judged first, the one it is judged against second"
        )
    for part in parts:
        parse_name(part)
    return tuple(parts)


def select(name: str, spec: RopeSpec, baked: float | None = None) -> RopeVariant:
    """The variant a user names: ``extended`` (as declared), ``baseline`` (scaling removed), ``paper`` (YaRN at
    the declared s, betas and length with m = 0.1·ln s + 1) or ``m=X`` (the same with attention factor X: what
    ``yarn tune`` proposes)."""
    form, m = parse_name(name)
    if form == "extended":
        return declared(spec, baked)
    if form == "baseline":
        return baseline(spec, baked)
    scaling = spec.scaling
    if scaling is None or scaling.type != "yarn":
        raise InputError(
            f"variant {name.strip()!r} re-runs the checkpoint's YaRN with another m, and this checkpoint declares "
            f"{'no scaling' if scaling is None else scaling.type}; extend it with YaRN first"
        )
    own = declared(spec, baked)
    return yarn(
        spec,
        own.factor,
        m,
        beta_fast=own.beta_fast,
        beta_slow=own.beta_slow,
        original_context=own.original_context,
        truncate=own.truncate,
        baked=baked,
        name=name.strip(),
    )


def select_all(names: str | list[str] | tuple[str, ...], spec: RopeSpec, baked: float | None = None) -> list[RopeVariant]:
    """``select`` for each name of ``parse_names`` (the first is judged against the second)."""
    return [select(part, spec, baked) for part in parse_names(names)]


COMPARISONS = ("linear", "ntk", "none")


def comparison(name: str, spec: RopeSpec, baked: float | None = None) -> RopeVariant:
    """The YaRN paper's alternatives at the checkpoint's own factor s, on the same weights: ``linear``
    (Position Interpolation), ``ntk`` (NTK-aware: the base raised to b·s^(D/(D-2))) or ``none`` (plain RoPE)."""
    if name not in COMPARISONS:
        raise InputError(f"--compare {name!r}: choose from {', '.join(COMPARISONS)}")
    if name == "none":
        return baseline(spec, baked, name="none")
    factor = spec.scaling.declared_factor(spec.max_context) if spec.scaling is not None else None
    if not factor or factor <= 1:
        raise InputError(f"--compare {name}: the checkpoint declares no scaling factor to compare at; extend it first")
    if name == "linear":
        return linear(spec, factor, baked, name="linear")
    base = rope.ntk_aware_base(spec.base, spec.rotary_dim, factor)
    cos_sin, softmax = on_baked(spec, baked, 1.0, 1.0)
    return RopeVariant(
        "ntk",
        "none",
        _plain(spec, base),
        cos_sin,
        base,
        float(factor),
        baked=baked,
        described=f"NTK-aware x{factor:g} (base {base:,.0f})",
        softmax_mscale=softmax,
    )
