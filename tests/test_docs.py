"""The docs stand alone: the generated pages match the code, the README stays a first screen, and nothing points
outside the repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_matches_help():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "cli_reference.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_docs_and_code_cite_only_files_in_the_repository():
    texts = [ROOT / "README.md", ROOT / "mkdocs.yml", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "yarn_cli").rglob("*.py"))]
    offenders = [
        str(p.relative_to(ROOT))
        for p in texts
        if "../shared" in p.read_text(encoding="utf-8") or re.search(r"\bSPEC\b", p.read_text(encoding="utf-8"))
    ]
    assert offenders == []
    assert (ROOT / "docs" / "conventions.md").exists()


def test_family_table_is_generated_from_the_registry():
    from yarn_cli.core.checkpoint import architectures

    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "family_table.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    page = (ROOT / "docs" / "families.md").read_text()
    rows = [line.split("|")[1] for line in page.splitlines() if line.startswith("| **")]
    assert sorted(row.split("**")[1] for row in rows) == sorted(architectures.registry())
    assert all(arch.doc is not None for arch in architectures.registry().values())


def test_readme_is_a_first_screen_with_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    assert [line.split()[0] for line in first_block.splitlines()] == ["./scripts/demo.sh", "./scripts/test.sh"]


def test_every_docs_page_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert [page for page in pages if f" {page}" not in nav] == []
