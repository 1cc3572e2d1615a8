"""``python -m fastapi_taskflow.cli``."""

from __future__ import annotations

from .app import main

main()
