"""``verify --card``: the checkpoint's Hugging Face model card (README.md beside the weights) written or updated
through huggingface_hub's ModelCard: front matter kept valid (tags added, the rest untouched), and one section
of its own (the scaling, the evaluation table, the heatmap) replaced on every run, the rest of the card kept."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from yarn_cli.core.verify import plan as verify_plan
from yarn_cli.errors import FormatError

START, END = "<!-- yarn_cli verify: start -->", "<!-- yarn_cli verify: end -->"
IMAGE = "yarn_verify_heatmap.png"
TAGS = ("yarn", "long-context", "rope-scaling")


def card_path(model: Path) -> Path:
    """README.md inside an HF folder, or beside a .gguf (as GGUF repositories on the hub hold it)."""
    return model / "README.md" if model.is_dir() else model.parent / "README.md"


def check(model: Path) -> None:
    """Before the run: an existing card must parse (its front matter is kept, so it must be valid)."""
    path = card_path(model)
    if path.exists():
        _load(path)


def _load(path: Path):
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(path)
    except (ValueError, OSError) as exc:
        raise FormatError(f"{path}: its front matter does not parse ({str(exc).splitlines()[0][:120]}); fix it or move it away") from exc


def _table(report: dict[str, Any]) -> str:
    names = [v["name"] for v in report["variants"]]
    head, rows = ["length"], []
    series: list[tuple[str, dict[str, dict[str, float]], str]] = []
    if "accuracy" in report:
        series += [(f"passkey {n}", report["accuracy"], "{:.0%}") for n in names[:2]]
    if "perplexity" in report:
        series += [(f"ppl {n}", report["perplexity"], "{:.2f}") for n in names[:2]]
    if report.get("ruler"):
        key = "average" if len(report["ruler"]["tasks"]) > 1 else None
        source = report["ruler"]["average"] if key else {n: report["ruler"]["scores"][n][report["ruler"]["tasks"][0]] for n in names}
        series += [(f"RULER {key or report['ruler']['tasks'][0]} {n}", source, "{:.1f}") for n in names[:2]]
    head += [title for title, _, _ in series]
    for length in report["lengths"]:
        row = [f"{length:,}"]
        for title, values, form in series:
            variant = title.rsplit(" ", 1)[1]
            value = values.get(variant, {}).get(str(length))
            row.append("-" if value is None else form.format(value))
        rows.append(row)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def section(report: dict[str, Any], image: str | None, base_model: str | None) -> str:
    declared = report["variants"][0]
    effective = report.get("ruler", {}).get("effective_length", {})
    lines = [
        START,
        "## Long-context evaluation (yarn_cli verify)",
        "",
        f"Base model: {base_model}." if base_model else "Base model: not recorded; `yarn verify --card --base-model ORG/NAME` adds it.",
        "",
        f"RoPE scaling: **{report['scaling']}**, trained length {report['original_context']:,}, "
        f"declared length {report['target_context']:,}; {report['engine']} engine on {report['device']}.",
        "",
        "```json",
        json.dumps({k: v for k, v in declared.items() if k != "name"}, indent=1),
        "```",
        "",
        _table(report),
        "",
        f"Verdict: **{verify_plan.verdict_word(report['verdict'])}**: {report['verdict']['reason']}",
    ]
    if effective:
        lines += [
            "",
            "RULER effective length (score >= {:g} at every length up to it): ".format(report["ruler"]["threshold"])
            + ", ".join(f"{v} {'-' if x['average'] is None else format(x['average'], ',')}" for v, x in effective.items()),
        ]
    if image:
        lines += ["", f"![needle-in-a-haystack heatmap]({image})"]
    return "\n".join(lines + [END])


def _gguf_base_model(model: Path) -> str | None:
    """A GGUF's own record of its base model (general.base_model.0.repo_url, a hub address), as a repo id."""
    if model.is_dir():
        return None
    from yarn_cli.io.gguf_reader import read_gguf

    url = read_gguf(model).get("general.base_model.0.repo_url")
    prefix = "https://huggingface.co/"
    return url[len(prefix) :].strip("/") if isinstance(url, str) and url.startswith(prefix) else None


def _heatmap(folder: Path, report: dict[str, Any]) -> str | None:
    """The judged variant's first heatmap, saved beside the card; its file name (None: the run drew none)."""
    from yarn_cli.io.atomic import atomic_path
    from yarn_cli.report import images as report_images

    first = report["variants"][0]["name"]
    task = next((t for t, by in report.get("heatmaps", {}).items() if first in by), None)
    if task is None:
        return None
    with atomic_path(folder / IMAGE) as tmp:
        report_images.draw_heatmap(report["heatmaps"][task][first], f"{task}: {first}", tmp)
    return IMAGE


def write(model: Path, report: dict[str, Any], base_model: str | None = None) -> Path:
    """Write or update the card (and its heatmap PNG beside it); returns the card's path. The base model is
    ``base_model``, else the card's own, else the GGUF's record of it; a card without one says how to add it."""
    from huggingface_hub import ModelCard, ModelCardData

    from yarn_cli.io.atomic import atomic_path

    path = card_path(model)
    existing = _load(path) if path.exists() else None
    data = existing.data if existing is not None else ModelCardData()
    data.tags = list(dict.fromkeys([*(data.tags or []), *TAGS]))
    data.base_model = base_model or data.base_model or _gguf_base_model(model)
    new = section(report, _heatmap(path.parent, report), data.base_model)
    if existing is not None:
        body = existing.text
        pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
        body = pattern.sub(lambda _: new, body) if pattern.search(body) else body.rstrip() + "\n\n" + new + "\n"
    else:
        body = f"\n# {model.name}\n\n{new}\n"
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
    with atomic_path(path) as tmp:
        tmp.write_text(str(card), encoding="utf-8")
    return path
