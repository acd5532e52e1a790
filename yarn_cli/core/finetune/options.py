"""`yarn finetune`'s choices as one value, each default declared here once (the CLI's flags read them from
``FINETUNE``, the training hyper-parameters from ``FINETUNE.recipe``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yarn_cli.core.finetune.plan import Recipe
from yarn_cli.core.options import with_changes


@dataclass(frozen=True)
class FinetuneRequest:
    scale: float | None = None  # a plain model is extended first; an extended one trains at its declared length
    to: str | None = None
    data: Sequence[str | Path] = ()  # () : Python's documentation topics, a demo corpus
    original_context: int | None = None
    recipe: Recipe = field(default_factory=Recipe)
    batch_tokens: int | None = None  # global batch in tokens (None: the paper's 64 windows)
    resume: bool = False
    force: bool = False
    revision: str | None = None

    @classmethod
    def build(cls, request: FinetuneRequest | None = None, **changes: Any) -> FinetuneRequest:
        return with_changes(cls, request, changes, "finetune")


FINETUNE = FinetuneRequest()
