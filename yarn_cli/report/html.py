"""report.html: one self-contained page (inline CSS, PNGs as data URIs, no script, no font or file from the
network) of one verify run, or of several side by side. Every string read from a report is escaped."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from yarn_cli.core.verify.plan import verdict_word

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.4em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right;font-variant-numeric:tabular-nums}
th{background:#f3f3f3}td.l,th.l{text-align:left}.pass{color:#0a7f55;font-weight:bold}.fail{color:#c8102e;font-weight:bold}.not-shown{color:#9a6700;font-weight:bold}
.runs{display:flex;gap:2em;align-items:flex-start}.run{flex:1;min-width:0;overflow-x:auto}img{max-width:100%;height:auto}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:.5em}figure{margin:.5em 0}
figcaption{font-size:.9em;color:#555}.note{color:#8a6d00}.prov td{word-break:break-all;font-size:.9em}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(head: list[str], rows: list[list[Any]], left: int = 1) -> str:
    cells = "".join(f"<th{' class=l' if i < left else ''}>{esc(h)}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{' class=l' if i < left else ''}>{esc(v)}</td>" for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _number(value: Any, form: str) -> str:
    return "-" if value is None else format(value, form)


def _by_length(report: dict[str, Any]) -> str:
    """Every task's figure per length and variant, as --json holds them."""
    names = [v["name"] for v in report["variants"]]
    columns: list[tuple[str, Any]] = []
    if "accuracy" in report:
        columns += [(f"passkey {n}", lambda length, n=n: _number(report["accuracy"][n].get(str(length)), ".0%")) for n in names]
    if "perplexity" in report:
        columns += [(f"ppl {n}", lambda length, n=n: _number(report["perplexity"][n].get(str(length)), ".2f")) for n in names]
    section = report.get("ruler")
    if section:
        for task in section["tasks"]:
            columns += [(f"{task} {n}", lambda length, n=n, t=task: _number(section["scores"][n][t].get(str(length)), ".1f")) for n in names]
        if len(section["tasks"]) > 1:
            columns += [(f"RULER avg {n}", lambda length, n=n: _number(section["average"][n].get(str(length)), ".1f")) for n in names]
    rows = [
        [f"{length:,}{' *' if length > report['original_context'] else ''}"] + [f(length) for _, f in columns] for length in report.get("lengths", [])
    ]
    return _table(["length"] + [title for title, _ in columns], rows) + "<p>* beyond the trained length</p>" if columns else ""


def _kld(report: dict[str, Any]) -> str:
    """The kld task's statistics per variant and length, as llama-perplexity --kl-divergence lists them."""
    rows = [
        [name, f"{int(length):,}"]
        + [_number(stats[k], ".4f") for k in ("mean", "median", "p99", "p99_9", "max")]
        + [_number(stats["top1_agreement"] / 100, ".1%")]
        for name, by_length in (report.get("kld") or {}).items()
        for length, stats in by_length.items()
    ]
    if not rows:
        return ""
    titles = ["variant", "length", "mean", "median", "99%", "99.9%", "max", "same top token"]
    return "<h2>KL divergence from the unextended model (nats per token)</h2>" + _table(titles, rows, left=1)


def _effective(report: dict[str, Any]) -> str:
    section = report.get("ruler")
    if not section:
        return ""
    keys = section["tasks"] + (["average"] if len(section["tasks"]) > 1 else [])
    rows = [[name] + [_number(section["effective_length"][name][k], ",") for k in keys] for name in section["effective_length"]]
    return f"<h2>RULER effective length (score &ge; {esc(section['threshold'])} points at every length up to it)</h2>" + _table(
        ["variant"] + keys, rows
    )


# How the variants table shows each number: rounded for reading (the JSON beside the page keeps every digit).
_VARIANT_FORMATS = {"theta": ",.6g", "factor": "g", "original_context": ",", "attention_factor": ".4f", "effective_m": ".4f"}


def _shown(key: str, value: Any) -> Any:
    form = _VARIANT_FORMATS.get(key, "g")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, form)
    return "-" if value is None else value


def _provenance(report: dict[str, Any]) -> str:
    """Who ran what, on which bytes: at the top, so a reader can trust or repeat the run."""
    given = report.get("provenance")
    if not given:
        return "<p class=note>No provenance: this report was written before verify recorded one.</p>"
    checkpoint = given.get("checkpoint") or {}
    rows = [
        ["yarn_cli", given.get("yarn_cli")],
        ["date (UTC)", given.get("date")],
        ["command", given.get("command") or "(Python API)"],
        ["checkpoint", f"{checkpoint.get('name')}, {checkpoint.get('bytes', 0):,} bytes in {checkpoint.get('files')} file(s)"],
        ["sha256", f"{checkpoint.get('sha256')} ({checkpoint.get('covers')})"],
        ["engine, device", f"{given.get('engine')} on {given.get('device')}"],
        ["seed, samples per cell", f"{given.get('seed')}, {given.get('samples_per_cell')}"],
    ]
    return "<table class=prov>" + "".join(f"<tr><th class=l>{esc(k)}</th><td class=l>{esc(v)}</td></tr>" for k, v in rows) + "</table>"


def _variants(report: dict[str, Any]) -> str:
    keys = ["kind", "label", "theta", "factor", "original_context", "attention_factor", "effective_m", "beta_fast", "beta_slow"]
    rows = [[v["name"]] + [_shown(k, v.get(k)) for k in keys] for v in report["variants"]]
    return "<h2>RoPE configuration: what differs between the variants</h2>" + _table(["variant"] + keys, rows, left=3)


def _figure(path: Path, title: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{esc(title)}" src="data:image/png;base64,{data}"><figcaption>{esc(title)}</figcaption></figure>'


def run_section(report: dict[str, Any], name: str, folder: Path, pictures: list[dict[str, str]]) -> str:
    """One verify run: verdict, parity line, configuration, tables, pictures, notes."""
    verdict = report["verdict"]
    word = verdict_word(verdict)
    parts = [
        f"<h1>{esc(name)}</h1>",
        f"<p>{esc(report['scaling'])}, trained {report['original_context']:,} &rarr; {report['target_context']:,}; "
        f"{esc(report['engine'])} engine on {esc(report['device'])}</p>",
        f"<p class={word.lower().replace(' ', '-')}>{word}: {esc(verdict['reason'])}</p>",
        _provenance(report),
    ]
    if report.get("parity"):
        parts.append(f"<p>{esc(report['parity']['line'])}</p>")
    parts += [_variants(report), "<h2>By length</h2>", _by_length(report), _kld(report), _effective(report)]
    if report.get("perplexity_curve"):
        methods = report["perplexity_curve"]["methods"]
        parts.append("<p>Perplexity: " + "; ".join(f"{esc(k.replace('_', ' '))}: {esc(v)}" for k, v in methods.items()) + "</p>")
        parts += [f"<p class=reading>{esc(line)}</p>" for line in report["perplexity_curve"].get("readings", [])]
    parts.append("<div class=figs>" + "".join(_figure(folder / p["file"], p["title"]) for p in pictures) + "</div>")
    parts += [f"<p class=note>note: {esc(note)}</p>" for note in report.get("notes", [])]
    return "".join(parts)


def page(title: str, sections: list[str]) -> str:
    runs = "".join(f'<div class="run">{s}</div>' for s in sections)
    return (
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title>"
        f"<style>{STYLE}</style></head><body><div class=runs>{runs}</div></body></html>"
    )
