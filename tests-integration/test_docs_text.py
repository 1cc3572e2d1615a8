"""The README and the docs are written for someone who has only them (issue 8, item 8).

The rendering of the API reference is checked where it is built (``nox -s docs`` fails
when a model's fields are missing or a private name shows); the README's
install-from-the-repository command is run by ``nox -s install_check``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def test_the_readme_says_how_to_install_today_and_after_a_release() -> None:
    for path in (ROOT / "README.md", DOCS / "index.md"):
        text = path.read_text()
        assert "not on the package index yet" in text, path
        assert "pip install ./packages/taskflow-core ./packages/taskflow-memory" in text, path
        assert 'pip install "taskflow-core[redis]"' in text, path
    readme = (ROOT / "README.md").read_text()
    assert "#subdirectory=packages/taskflow-core" in readme


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_no_page_refers_to_documents_the_reader_does_not_have(page: Path) -> None:
    text = page.read_text()
    for phrase in ("original API", "original design", "design document", "the design "):
        assert phrase.lower() not in text.lower(), f"{page.name} mentions {phrase!r}"


def test_the_migration_page_and_the_changelog_are_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (
        "migrating-from-backgroundtasks.md",
        "changelog.md",
        "reference-pages/index.md",
    ):
        assert (DOCS / page).exists(), page
        assert re.search(rf":\s*{re.escape(page)}\s*$", nav, re.MULTILINE), page
    migrating = (DOCS / "migrating-from-backgroundtasks.md").read_text()
    for section in ("## What changes", "## Turning it off", "returns the task's id"):
        assert section in migrating
