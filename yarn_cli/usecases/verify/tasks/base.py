"""The task interface of verify: a task plans its prompts for a length, runs one through an engine under a
RoPE variant, scores it, aggregates the cells, and contributes its JSON keys, its table columns and its part
of the verdict. The protocol loop knows no task by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from yarn_cli.core.rope.variants import RopeVariant
from yarn_cli.core.verify.plan import Judgement

if TYPE_CHECKING:
    from yarn_cli.usecases.verify.protocol import VerifyOptions


@dataclass(frozen=True)
class Job:
    """One prompt of a task at one length (and depth, and sample)."""

    task: str
    length: int
    ids: list[int]
    depth: float | None = None
    sample: int = 0
    expected: Any = None  # what scoring needs: the passkey, or where a window's scored tokens start
    title: str | None = None  # what the progress line calls it, where not ``task`` (a RULER task inside the suite)

    def describe(self, variant: str) -> str:
        depth = f", depth {self.depth:.0%}" if self.depth is not None else ""
        return f"{variant}: {self.title or self.task} at {self.length:,}{depth}, sample {self.sample + 1}"


@dataclass(frozen=True)
class Cell:
    """One job's result under one variant. ``score`` is the task's own number (a hit, a loss sum...)."""

    task: str
    variant: str
    length: int
    depth: float | None
    sample: int
    score: float | None
    detail: dict[str, Any] = field(default_factory=dict)
    prefill_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_tokens: int = 0
    decode_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "variant": self.variant, "length": self.length, "depth": self.depth, "sample": self.sample, "score": self.score}


@dataclass(frozen=True)
class Context:
    """What every task plans from: the engine's tokenizer, the tokenized text and the run's options."""

    encode: Callable[[str], list[int]]
    bos: list[int]
    text_ids: list[int]
    original_context: int
    options: VerifyOptions
    variants: list[str]  # names, in run order; the first is judged, against the second
    text: str = ""  # the text (--text) ``text_ids`` tokenize: essay haystacks are cut from its words
    lengths: list[int] = field(default_factory=list)  # every length the run plans (a task may run once, at the longest)


@dataclass(frozen=True)
class Column:
    """A table column per variant: ``title`` ("passkey"), the value by (variant, length), and its format."""

    title: str
    value: Callable[[str, int], float | None]
    format: Callable[[float], str]
    good: Callable[[float], bool] | None = None  # colour the value green/red where the task judges it


class Task(Protocol):
    name: str
    answer_tokens: int  # the longest answer it decodes (0: it only scores)
    pictured: tuple[str, ...]  # the task names of its cells that a heatmap shows (length x depth), if any

    def plan(self, context: Context, length: int) -> tuple[list[Job], list[str]]:
        """The jobs at ``length``, and notes (why a length has none)."""
        ...

    def run(self, engine: Any, variant: RopeVariant, job: Job) -> Cell: ...

    def finish(self, cells: list[Cell], context: Context) -> TaskResult: ...


@dataclass
class TaskResult:
    """A task's aggregate: its JSON keys, its columns, its part of the verdict and its notes."""

    report: dict[str, Any]
    columns: list[Column]
    judgement: Judgement | None
    notes: list[str] = field(default_factory=list)
    separated: dict[int, bool] | None = None  # core.verify.plan.separation: where this task told the variants apart


def by_variant_and_length(cells: list[Cell], reduce: Callable[[list[Cell]], float | None]) -> dict[str, dict[int, float]]:
    """{variant: {length: reduce(cells of that variant and length)}}, variants and lengths in run order."""
    groups: dict[str, dict[int, list[Cell]]] = {}
    for cell in cells:
        groups.setdefault(cell.variant, {}).setdefault(cell.length, []).append(cell)
    result: dict[str, dict[int, float]] = {}
    for variant, lengths in groups.items():
        result[variant] = {}
        for length, group in lengths.items():
            value = reduce(group)
            if value is not None:
                result[variant][length] = value
    return result


def keyed(values: dict[str, dict[int, float]], variants: list[str]) -> dict[str, dict[str, float]]:
    """JSON form: lengths as strings, every variant present (empty where nothing ran)."""
    return {v: {str(n): x for n, x in values.get(v, {}).items()} for v in variants}
