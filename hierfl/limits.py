"""Refuse, before building anything, a run that cannot fit in this machine's memory."""

from __future__ import annotations

import math
import os

from hierfl.errors import ScenarioError
from hierfl.scenario import Scenario

BYTES_PER_DEVICE = 2048  # graph node and link, name, per-device columns (measured ~1.2 KiB)
# trace row, the events table built from it at the end, and writing that table: the Arrow
# copy and pages of events.parquet (measured 80 bytes an event at 900,000 events)
BYTES_PER_EVENT = 49 * 3 + 80
# writing outputs whatever the run's size: trace.json streams 65,536 events at a time (about
# 150 MB of text and Arrow buffers, measured), figures draw a sample of the devices
OUTPUT_BYTES = 2**28
EVENTS_PER_TRAINING = 3  # download, compute, upload
USABLE_SHARE = 0.8


def physical_memory_bytes() -> int:
    """Installed memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def estimate_bytes(scenario: Scenario, input_elements: int, n_params: int) -> int:
    """An upper estimate of a run's memory: fleet, trace, writing the outputs, and data and
    weights when learning."""
    devices = scenario.n_devices
    run = scenario.run
    trainings = devices * run.cloud_rounds * run.edge_rounds
    total = devices * BYTES_PER_DEVICE + trainings * EVENTS_PER_TRAINING * BYTES_PER_EVENT
    total += OUTPUT_BYTES
    if run.learning:
        samples = devices * scenario.data.samples_per_device[1] + scenario.data.test_samples
        total += 4 * samples * input_elements + 4 * 4 * devices * n_params
        if scenario.compression.error_feedback:  # every sender's residual, float32
            total += 4 * (devices + scenario.topology.edges) * n_params
    return total


def check_memory(scenario: Scenario, input_elements: int, n_params: int) -> None:
    """Raise a ScenarioError when the estimate exceeds the usable share of physical memory."""
    needed = estimate_bytes(scenario, input_elements, n_params)
    usable = USABLE_SHARE * physical_memory_bytes()
    if needed > usable:
        raise ScenarioError(
            f"devices: {scenario.n_devices:,} devices x {scenario.run.cloud_rounds:,} cloud "
            f"rounds need about {needed / 2**30:,.1f} GiB; this machine has "
            f"{usable / 2**30:,.1f} GiB usable (fewer devices or rounds, or learning = false)"
        )


def input_elements(shape: tuple[int, ...]) -> int:
    """Numbers in one sample."""
    return math.prod(shape)
