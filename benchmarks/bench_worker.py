"""One implementation's scenarios in an interpreter of its own, driven by ``bench.py``.

    python benchmarks/bench_worker.py plain|taskflow|competitor

Reads one JSON command per line on stdin (``{"scenario": "s1", "params": {...}}``),
runs it on a fresh event loop and answers with one line ``@@result {...}`` on stdout
(``{"value": x}`` or ``{"error": "..."}``). Anything else it prints goes to stderr.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    impl = sys.argv[1]
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # library prints must not mix with answers
    logging.basicConfig(level=logging.WARNING)
    module = importlib.import_module(f"impl_{impl}")
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
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
