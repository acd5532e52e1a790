"""Reports of verify runs: ``verify --report DIR`` (one run) and ``yarn report A.json B.json -o DIR`` (runs side by
side). DIR holds report.html (self-contained), the PNGs it shows and each run's JSON; it appears atomically."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarn_cli.errors import FormatError, InputError


@dataclass(frozen=True)
class ReportResult:
    folder: Path
    html: Path
    pictures: list[str]  # file names inside ``folder``

    def to_json(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "html": str(self.html), "pictures": self.pictures}


def check_folder(folder: Path) -> None:
    """DIR may be new, empty or an earlier report (replaced); anything else is refused before a run starts."""
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / "report.html").exists())):
        raise InputError(f"--report {folder}: exists and is not an earlier report; give a new or empty folder")


def write(reports: list[tuple[str, dict[str, Any]]], folder: Path) -> ReportResult:
    """report.html with every run's section side by side, their PNGs and JSON, published at once."""
    from yarn_cli.io.atomic import atomic_path
    from yarn_cli.report import html as report_html
    from yarn_cli.report import images as report_images

    check_folder(folder)
    written: list[str] = []
    with atomic_path(folder, force=True) as staging:
        staging.mkdir()
        sections = []
        for index, (name, report) in enumerate(reports):
            prefix = f"run{index + 1}-" if len(reports) > 1 else ""
            run_folder = staging / prefix.rstrip("-") if prefix else staging
            run_folder.mkdir(exist_ok=True)
            pictures = report_images.pictures(report, run_folder)
            (run_folder / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
            sections.append(report_html.run_section(report, name, run_folder, pictures))
            written += [f"{prefix.rstrip('-') + '/' if prefix else ''}{p['file']}" for p in pictures]
        title = " vs ".join(name for name, _ in reports)
        (staging / "report.html").write_text(report_html.page(title, sections), encoding="utf-8")
    return ReportResult(folder, folder / "report.html", written)


def run_title(report: dict[str, Any], fallback: str) -> str:
    """A run's title: the checkpoint tested and the variant judged (``fallback``: reports without provenance)."""
    checkpoint = (report.get("provenance") or {}).get("checkpoint") or {}
    variants = report.get("variants") or [{}]
    judged = variants[0].get("label") or variants[0].get("name") or ""
    return f"{checkpoint.get('name') or fallback}: {judged}" if judged else str(checkpoint.get("name") or fallback)


def load(path: Path) -> tuple[str, dict[str, Any]]:
    """A verify --json file (or a report folder's report.json), checked to be one."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "report.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc}); give a verify --json file or a --report folder") from exc
    except ValueError as exc:
        raise FormatError(f"{path}: not JSON ({exc}); give the output of yarn verify --json") from exc
    if not isinstance(data, dict) or not {"variants", "verdict", "scaling"} <= set(data) or "lengths" not in data:
        raise FormatError(f"{path}: not a verify report (no variants, verdict or lengths); give the output of yarn verify --json")
    return run_title(data, path.parent.name if path.name == "report.json" else path.stem), data


def compare(paths: list[Path], folder: Path) -> ReportResult:
    """`yarn report A.json B.json -o DIR`: the runs side by side, each as its own report shows it."""
    if not paths:
        raise InputError("yarn report: give one or more verify --json files (or --report folders)")
    from yarn_cli.io import packages

    packages.require("yarn report", "plot")
    return write([load(p) for p in paths], Path(folder).expanduser())
