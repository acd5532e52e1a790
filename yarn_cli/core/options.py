"""What every verb's options object shares: built from another one plus keyword changes, unknown names refused."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from yarn_cli.errors import InputError

T = TypeVar("T")

# The verbs that load weights (verify, tune) share these: the engine and the device they run on.
DEFAULT_ENGINE = "native"
DEFAULT_DEVICE = "auto"  # cuda where torch sees a GPU, else cpu


def with_changes(cls: type[T], base: T | None, changes: dict[str, Any], verb: str) -> T:
    """``base`` (or the defaults of ``cls``) with ``changes``; a name the verb does not know is one clear line."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise InputError(f"{verb}: unknown option {', '.join(unknown)}; known: {', '.join(names)}")
    start = base if base is not None else cls()
    return cls(**{**{name: getattr(start, name) for name in names}, **changes})


@dataclass(frozen=True)
class EngineOptions:
    """What only some engines take (vLLM's parallel layout, dtype, memory share and CUDA graphs): verify and tune
    pass the same ones."""

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    dtype: str = "auto"  # float32 on a CPU
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, value: EngineOptions | dict[str, Any] | None) -> EngineOptions:
        """An EngineOptions from itself, a dict of its fields (the API's older form), or None (the defaults)."""
        if value is None or isinstance(value, EngineOptions):
            return value or ENGINE
        return with_changes(cls, None, value, "engine_options")


ENGINE = EngineOptions()  # the defaults, for the engine flags of verify and tune, the vLLM engine and the check of other engines
