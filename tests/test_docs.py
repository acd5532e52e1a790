"""The docs stand alone: the CLI reference matches --help, and nothing points outside the repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_matches_help():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "cli_reference.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_docs_and_code_cite_only_files_in_the_repository():
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "yarn_cli").rglob("*.py"))]
    offenders = [str(p.relative_to(ROOT)) for p in texts if "../shared" in p.read_text(encoding="utf-8")
                 or "SPEC" in p.read_text(encoding="utf-8")]
    assert offenders == []
    assert (ROOT / "docs" / "conventions.md").exists()


def test_readme_family_table_names_every_registry_entry():
    from yarn_cli.core import architectures

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Model families"):readme.index("## Python API")]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    for family in architectures.registry():
        assert any(family in row for row in rows), f"README's family table lacks {family}"
