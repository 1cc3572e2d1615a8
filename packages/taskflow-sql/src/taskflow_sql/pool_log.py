"""What SQLAlchemy's pool logs about taskflow's own connections.

An event loop that ends without a shutdown (``asyncio.run()`` returning, a bare
``TestClient`` finishing a request) cancels every task it has at once, a connection's
return to its pool among them. SQLAlchemy then logs "Exception during reset or
similar" at ERROR with the ``CancelledError``'s traceback, and discards the
connection: nothing is lost or left open, the connection is closed instead of reused.
For the pools taskflow makes (named ``taskflow``, so a user's own pools are left
alone) that line is logged at DEBUG, without the traceback.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["POOL_LOGGING_NAME", "CancelledResets", "quiet_cancelled_resets"]

POOL_LOGGING_NAME = "taskflow"
"""The ``pool_logging_name`` of the engines taskflow makes."""

_RESET_FAILED = "Exception during reset or similar"


class CancelledResets(logging.Filter):
    """Turn SQLAlchemy's ERROR about a cancelled connection return into a DEBUG line of
    ``logger`` (the pool's), dropped unless that logger is enabled for DEBUG."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record when it is that error with a ``CancelledError``."""
        exc_info = record.exc_info
        if (
            record.msg == _RESET_FAILED
            and exc_info is not None
            and isinstance(exc_info[1], asyncio.CancelledError)
        ):
            if not self.logger.isEnabledFor(logging.DEBUG):
                return False
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg = (
                "a connection's return to the pool was cancelled (its event loop was "
                "ending); the pool closed it instead"
            )
            record.args = ()
            record.exc_info = record.exc_text = None
        return True


def quiet_cancelled_resets(engine: AsyncEngine) -> None:
    """Install :class:`CancelledResets` on the logger of ``engine``'s pool, when that
    pool is one taskflow named (idempotent)."""
    logger = getattr(engine.sync_engine.pool, "logger", None)
    logger = getattr(logger, "logger", logger)  # SQLAlchemy's InstanceLogger wraps one
    if not isinstance(logger, logging.Logger):
        return
    if not logger.name.endswith("." + POOL_LOGGING_NAME):
        return
    if not any(isinstance(existing, CancelledResets) for existing in logger.filters):
        logger.addFilter(CancelledResets(logger))
