"""The seed apps' verbatim blocks are still the reference pages' code, byte for byte.

A block is the lines between ``# --- verbatim from <page>, section "<section>" ---`` and
``# --- end verbatim ---`` in ``seed_apps/*.py``. Leading and trailing blank lines are
ignored; a block placed inside a route body (because the page shows bare statements that
need a ``tasks``/``background_tasks`` in scope) loses exactly the indentation of its
start marker, and nothing else. The block must occur in the page inside its section.
Every code example of both pages must be covered by some block or by a test that reads
the page itself (the two signature listings, see test_seed_managed_background_tasks.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SEED_APPS = HERE / "seed_apps"
SEEDS = Path(__file__).resolve().parents[1] / "docs" / "reference-pages"

# Section headings of each page, in page order.
SECTIONS = {
    "adding-tasks.txt": [
        "Basic usage",
        "Positional and keyword arguments",
        "Storing the task ID",
        "Idempotency keys",
        "Tags",
        "Adding tasks outside a route",
    ],
    "managed-background-tasks.txt": [
        "Constructor",
        "Methods",
        "Injection patterns",
        "Direct construction for testing",
    ],
}

# Every code example of the pages, by a line only it has. Examples marked "page" are
# checked by reading the page itself (they are signatures, not runnable code).
EXAMPLES = [
    ("adding-tasks.txt", "Basic usage", "task_id = tasks.add_task(send_email, email)"),
    ("adding-tasks.txt", "Positional and keyword arguments", "# positional"),
    ("adding-tasks.txt", "Positional and keyword arguments", "# keyword"),
    ("adding-tasks.txt", "Positional and keyword arguments", "# mixed"),
    ("adding-tasks.txt", "Storing the task ID", '@app.post("/report")'),
    ("adding-tasks.txt", "Storing the task ID", '@app.get("/report/{task_id}")'),
    ("adding-tasks.txt", "Idempotency keys", 'idempotency_key=f"invoice-{invoice_id}",'),
    ("adding-tasks.txt", "Tags", '@app.post("/invoice")'),
    ("adding-tasks.txt", "Tags", "def process_invoice(user_id: int) -> None:"),
    ("adding-tasks.txt", "Adding tasks outside a route", "async def on_startup():"),
    ("managed-background-tasks.txt", "Methods", "# Basic enqueue"),
    ("managed-background-tasks.txt", "Methods", "# With priority"),
    ("managed-background-tasks.txt", "Methods", "# Eager dispatch"),
    ("managed-background-tasks.txt", "Methods", "# With deduplication"),
    ("managed-background-tasks.txt", "Methods", "# With tags for observability"),
    ("managed-background-tasks.txt", "Injection patterns", "= Depends(task_manager.get_tasks),"),
    (
        "managed-background-tasks.txt",
        "Injection patterns",
        "def signup(email: str, background_tasks: ManagedBackgroundTasks):",
    ),
    (
        "managed-background-tasks.txt",
        "Injection patterns",
        "def signup(email: str, background_tasks: BackgroundTasks):",
    ),
    (
        "managed-background-tasks.txt",
        "Direct construction for testing",
        "task_id = managed.add_task(my_func, arg)",
    ),
]
READ_FROM_PAGE = [
    ("managed-background-tasks.txt", "Constructor", "background_tasks: BackgroundTasks | None"),
    ("managed-background-tasks.txt", "Methods", "def add_task("),
]

START = re.compile(
    r'^(?P<indent>[ ]*)# --- verbatim from (?P<page>\S+), section "(?P<section>[^"]+)" ---$'
)
END = re.compile(r"^[ ]*# --- end verbatim ---$")


@dataclass
class Block:
    file: str
    line: int
    page: str
    section: str
    text: str


def _blocks() -> list[Block]:
    blocks: list[Block] = []
    for path in sorted(SEED_APPS.glob("*.py")):
        lines = path.read_text().split("\n")
        i = 0
        while i < len(lines):
            start = START.match(lines[i])
            if not start:
                assert "# --- verbatim" not in lines[i], f"{path.name}:{i + 1}: bad marker"
                i += 1
                continue
            indent = start["indent"]
            body: list[str] = []
            j = i + 1
            while j < len(lines) and not END.match(lines[j]):
                assert not START.match(lines[j]), f"{path.name}:{j + 1}: nested verbatim"
                line = lines[j]
                assert line.strip() == "" or line.startswith(indent), (
                    f"{path.name}:{j + 1}: verbatim line is less indented than its marker"
                )
                body.append(line[len(indent) :] if line.strip() else "")
                j += 1
            assert j < len(lines), f"{path.name}:{i + 1}: verbatim block never ends"
            while body and not body[0].strip():
                body.pop(0)
            while body and not body[-1].strip():
                body.pop()
            assert body, f"{path.name}:{i + 1}: empty verbatim block"
            blocks.append(Block(path.name, i + 1, start["page"], start["section"], "\n".join(body)))
            i = j + 1
    return blocks


BLOCKS = _blocks()


def _page(name: str) -> str:
    path = SEEDS / name
    if not path.exists():
        pytest.fail(f"reference page {path} is missing: it belongs in docs/reference-pages/")
    return path.read_text()


def _section_span(page: str, section: str) -> tuple[int, int]:
    text = _page(page)
    headings = SECTIONS[page]
    assert section in headings, f"unknown section {section!r} of {page}"
    start = re.search(rf"^{re.escape(section)}$", text, re.MULTILINE)
    assert start, f"section heading {section!r} not found in {page}"
    index = headings.index(section)
    end = len(text)
    if index + 1 < len(headings):
        following = re.search(
            rf"^{re.escape(headings[index + 1])}$", text[start.end() :], re.MULTILINE
        )
        assert following, f"section heading {headings[index + 1]!r} not found in {page}"
        end = start.end() + following.start()
    return start.end(), end


def test_seed_apps_have_verbatim_blocks() -> None:
    assert len(BLOCKS) >= 17
    assert {b.page for b in BLOCKS} == set(SECTIONS)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b.file}:{b.line}")
def test_block_is_verbatim_in_its_section(block: Block) -> None:
    text = _page(block.page)
    begin, end = _section_span(block.page, block.section)
    where = text.find(block.text, begin, end)
    assert where != -1, (
        f"{block.file}:{block.line}: this block is not in {block.page}, section "
        f"{block.section!r}, byte for byte:\n{block.text}"
    )


@pytest.mark.parametrize(("page", "section", "needle"), EXAMPLES)
def test_every_example_is_run_by_a_seed_app(page: str, section: str, needle: str) -> None:
    begin, end = _section_span(page, section)
    assert needle in _page(page)[begin:end], f"{needle!r} is no longer in {page}/{section}"
    assert any(b.page == page and b.section == section and needle in b.text for b in BLOCKS), (
        f"no seed app runs the example of {page}/{section} containing {needle!r}"
    )


@pytest.mark.parametrize(("page", "section", "needle"), READ_FROM_PAGE)
def test_signature_listings_are_where_the_signature_tests_read_them(
    page: str, section: str, needle: str
) -> None:
    begin, end = _section_span(page, section)
    assert needle in _page(page)[begin:end]
