"""The Lua scripts that make every operation one atomic round trip.

Each ``<name>.lua`` file in this package starts with ``--@ uses: block ...`` and is
prefixed with those blocks of ``lib.lua`` (shared helpers, in ``lib.lua`` order, with the
blocks they need): Redis runs a script's helper definitions on every call, so a script
carries only the helpers it uses. Scripts are registered once per client; calls go out
as ``EVALSHA``, and a script is reloaded transparently when the server answers
``NOSCRIPT`` (after a restart or a ``SCRIPT FLUSH``).
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.resources import files

__all__ = ["SCRIPT_NAMES", "SHAS", "source"]

SCRIPT_NAMES = (
    "write",
    "take_key",
    "adopt",
    "get",
    "find_key",
    "append_logs",
    "query",
    "stats",
    "durations",
    "throughput",
    "purge",
    "enqueue",
    "claim",
    "dequeue",
    "schedule_once",
    "acquire_lock",
    "release_lock",
    "migrate",
    "publish",
)
"""Every script, by file name without ``.lua``."""


_MARK = "--@ "


def _blocks(lib: str) -> tuple[str, dict[str, tuple[list[str], str]]]:
    """Split ``lib.lua`` into its preamble and ``{name: (needs, text)}``, in file order."""
    preamble, *parts = lib.split("\n" + _MARK)
    blocks: dict[str, tuple[list[str], str]] = {}
    for part in parts:
        header, _, text = part.partition("\n")
        name, _, needs = header.partition(":")
        blocks[name.strip()] = (needs.split(), text)
    return preamble, blocks


def _closure(blocks: dict[str, tuple[list[str], str]], uses: list[str]) -> set[str]:
    wanted: set[str] = set()
    todo = ["base", *uses]
    while todo:
        name = todo.pop()
        if name not in blocks:
            raise ValueError(f"taskflow Redis script library has no block {name!r}")
        if name not in wanted:
            wanted.add(name)
            todo += blocks[name][0]
    return wanted


@cache
def source(name: str) -> str:
    """Return the full text of script ``name``: the helpers it uses, then its body.

    Raises:
        ValueError: ``name`` is not one of :data:`SCRIPT_NAMES`.
    """
    if name not in SCRIPT_NAMES:
        raise ValueError(f"unknown taskflow Redis script {name!r}")
    here = files(__package__)
    preamble, blocks = _blocks(here.joinpath("lib.lua").read_text(encoding="utf-8"))
    body = here.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    first, _, _ = body.partition("\n")
    uses = first.removeprefix(_MARK + "uses:").split() if first.startswith(_MARK + "uses:") else []
    wanted = _closure(blocks, uses)
    helpers = [text for block, (_, text) in blocks.items() if block in wanted]
    return "\n".join([preamble, *helpers, body])


SHAS: dict[str, str] = {
    name: hashlib.sha1(source(name).encode("utf-8")).hexdigest() for name in SCRIPT_NAMES
}
"""The SHA1 of every script (what ``EVALSHA`` names), computed once per process."""
