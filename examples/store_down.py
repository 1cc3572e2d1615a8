"""What an app sees while its store is down: refusals and log lines that name no server.

Run it with nothing listening at the URL's address (``python examples/store_down.py``):
the app starts anyway, ``add_task()`` refuses with ``BackendUnavailableError``, and the
log says why in the driver's words, with the password shown as ``***`` and the
server's address as ``<host>``, so the lines are safe to ship to a log service.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi_taskflow import BackendUnavailableError, TaskManager

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

# Port 9 (discard) on this machine: nothing listens there, so the connection is refused.
STORE_URL = "postgresql://app:s3cret@127.0.0.1:9/app"


async def main() -> None:
    task_manager = TaskManager(backend=STORE_URL)
    async with task_manager:  # starts anyway, and keeps trying to connect
        try:
            task_manager.add_task(print, "hello")
        except BackendUnavailableError as exc:
            print(f"refused: {exc}")


if __name__ == "__main__":
    asyncio.run(main())
