"""One implementation's scenarios in an interpreter of its own, driven by ``bench.py``.

    python benchmarks/bench_worker.py plain|taskflow|competitor

Reads one JSON command per line on stdin (``{"scenario": "s1", "params": {...}}``),
runs it on a fresh event loop and answers with one line ``@@result {...}`` on stdout
(``{"value": x}`` or ``{"error": "..."}``). Anything else it prints goes to stderr.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import logging
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def use_sources(folders: str) -> None:
    """Import taskflow from ``folders`` (os.pathsep-separated ``packages/*/src``), put in
    ``sys.path`` where this checkout's source folders are (editable installs), so this
    worker has as many entries as the others (an import that fails walks them all)."""
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ours = os.path.join(checkout, "packages") + os.sep
    wanted = [f for f in folders.split(os.pathsep) if f]
    at = next((i for i, p in enumerate(sys.path) if p.startswith(ours)), len(sys.path))
    sys.path[:] = [p for p in sys.path if not p.startswith(ours)]
    sys.path[at:at] = wanted


def main() -> None:
    impl = sys.argv[1]
    if os.environ.get("BENCH_TASKFLOW_SOURCES"):
        use_sources(os.environ["BENCH_TASKFLOW_SOURCES"])
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # library prints must not mix with answers
    logging.basicConfig(level=logging.WARNING)
    module = importlib.import_module(f"impl_{impl}")
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        # Every scenario starts from the same collector state: what earlier scenarios
        # left (their garbage, the young generations' counts) would otherwise decide
        # whether a full collection falls into this one (S1 swung 6.8 / 13.5 µs).
        gc.collect()
        try:
            value = asyncio.run(getattr(module, command["scenario"])(**command["params"]))
            answer = {"value": value}
        except Exception as exc:
            traceback.print_exc()
            answer = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        out.write("@@result " + json.dumps(answer) + "\n")
    cleanup = getattr(module, "cleanup", None)
    if cleanup is not None:
        asyncio.run(cleanup())


if __name__ == "__main__":
    main()
