"""Load a user's object named ``package.module:Name``: the only code a scenario can name."""

from __future__ import annotations

import importlib
from typing import Any

from hierfl.errors import ScenarioError


def load_object(reference: str, key: str) -> Any:
    """Import ``package.module`` and return its attribute ``Name``; errors name ``key``."""
    module_name, _, attr = reference.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ScenarioError(f"{key}: cannot load {reference!r}: {error}") from None
