"""`yarn extend`'s choices as one value, each default declared here once (the CLI's flags read them from ``EXTEND``).
How the files are written (``--copy``, ``--workers``) belongs to applying a plan, not to the plan: it stays apart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yarn_cli.core.options import with_changes
from yarn_cli.core.rope.scalars import BETA_FAST_DEFAULT, BETA_SLOW_DEFAULT


@dataclass(frozen=True)
class ExtendRequest:
    scale: float | None = None  # exactly one of scale and to
    to: str | None = None
    original_context: int | None = None
    beta_fast: float = BETA_FAST_DEFAULT  # written to HF configs only: llama.cpp applies 32 and 1
    beta_slow: float = BETA_SLOW_DEFAULT
    bake_temperature: bool = False
    replace: bool = False  # re-extend a checkpoint that carries a scaling, from its original length
    force: bool = False
    revision: str | None = None
    modelfile: bool = False
    attention_factor: float | None = None  # None: the paper's 0.1·ln s + 1
    stack: bool = False  # GGUF: keep rope_freqs and add YaRN on top
    yarn_layers: str | None = None  # sliding + full models: "full" or "all" layers get YaRN; None: the model's design

    @property
    def betas(self) -> tuple[float, float]:
        return self.beta_fast, self.beta_slow

    @classmethod
    def build(cls, request: ExtendRequest | None = None, **changes: Any) -> ExtendRequest:
        return with_changes(cls, request, changes, "extend")


EXTEND = ExtendRequest()
