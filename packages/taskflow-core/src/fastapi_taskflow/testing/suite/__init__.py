"""The backend conformance suite, one mixin class per area."""

from __future__ import annotations

from .logs import LogTests
from .store_create import StoreCreateTests
from .transitions import TransitionTests


class BackendConformance(StoreCreateTests, TransitionTests, LogTests):
    """Every standard test."""
