"""Shared fixtures: small scenario tables to build runs from, and the repository's scenarios."""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import settings

import hierfl
from hierfl.scenario import Scenario

# The test models are tiny: thread start-up and contention cost far more than they save,
# and on a loaded 2-core machine they made one SGD step 100x slower.
torch.set_num_threads(1)

# CI replays the same examples every run (a landing never hinges on a lucky draw); local
# runs keep exploring new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Remembered FLOP counts go to a fresh folder per test session, never the user's cache.
os.environ["HIERFL_CACHE_DIR"] = tempfile.mkdtemp(prefix="hierfl-cache-")

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

WEAK = {
    # An mcu-like board whose figures keep the arithmetic of the tests by hand.
    "memory_kb": 512,
    "compute_mflops": 100,
    "bandwidth_kbps": 100,
    "latency_ms": 50,
    "battery_mah": 0.1,  # 0.1 / 1000 * 3600 * 2.5 = 0.9 J
    "voltage_v": 2.5,
    "power_compute_w": 0.2,
    "power_tx_w": 0.95,
    "power_rx_w": 0.3,
    "power_idle_w": 0.0,
}


def small_raw(**sections: Any) -> dict[str, Any]:
    """A small timing-only scenario table: 1 edge, 2 mcu, dense updates, all selected.

    Keyword arguments replace or update top-level sections (a dict updates, anything else
    replaces).
    """
    raw: dict[str, Any] = {
        "name": "small",
        "seed": 7,
        "run": {"cloud_rounds": 2, "edge_rounds": 1, "local_epochs": 2, "batch_size": 8,
                "learning": False},
        "data": {"samples_per_device": 40},
        "model": {"name": "compact"},
        "compression": {"quantize": "none", "prune_ratio": 0.0, "payload": "delta"},
        "selection": {"policy": "all", "fraction": 1.0, "min_battery": 0.0},
        "topology": {"mode": "hierarchical", "edges": 1},
        "devices": [{"profile": "mcu", "count": 2}],
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **copy.deepcopy(value)}
        else:
            raw[key] = copy.deepcopy(value)
    return raw


@pytest.fixture(scope="session")
def make_scenario() -> Callable[..., Scenario]:
    """Build a Scenario from ``small_raw`` with the given section updates."""

    def build(**sections: Any) -> Scenario:
        return hierfl.parse_scenario(small_raw(**sections))

    return build


@pytest.fixture(scope="session")
def weak_profile() -> dict[str, Any]:
    """A custom profile table with a 0.9 J battery and no idle drain."""
    return dict(WEAK)


@pytest.fixture(scope="session")
def scenario_files() -> list[Path]:
    """Every scenario file shipped in scenarios/."""
    files = sorted(SCENARIOS.glob("*.toml"))
    assert files, f"no scenario files in {SCENARIOS}"
    return files
