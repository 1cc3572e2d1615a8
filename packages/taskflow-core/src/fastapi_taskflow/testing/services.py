"""Tests that need a real server: skip when it is missing, or fail when CI requires it."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["REQUIRE_SERVICES_ENV", "service_missing"]

REQUIRE_SERVICES_ENV = "TASKFLOW_REQUIRE_SERVICES"
"""Set to ``1`` (as CI does) to make a missing server fail tests instead of skipping them."""


def service_missing(reason: str) -> NoReturn:
    """Skip the current test because a server it needs is missing.

    With ``TASKFLOW_REQUIRE_SERVICES=1`` the test fails instead, so a CI run whose
    services did not start can never pass by skipping everything.

    Args:
        reason: what is missing and how to provide it (shown in the report).
    """
    if os.environ.get(REQUIRE_SERVICES_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_SERVICES_ENV}=1, so this is a failure)")
    pytest.skip(reason)
