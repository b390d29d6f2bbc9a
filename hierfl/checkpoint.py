"""Cloud-round checkpoints: everything a run needs to continue exactly where it stopped.

At a cloud-round boundary the state is small and complete: the clock, the global model
(edges restart from it every cloud round), batteries, tallies and the trace so far.
Training jobs and selection draws are seeded by (seed, round, device or edge), and data
and the initial model are rebuilt from the seed, so they need no saving. Files are written
atomically and read with ``torch.load(weights_only=True)``: a checkpoint is data, never code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from hierfl.errors import HierflError
from hierfl.results import atomic_write
from hierfl.scenario import Scenario, parse_scenario
from hierfl.sim.engine import Simulation

CHECKPOINT = "checkpoint.pt"
FORMAT = 1
_BATTERY = ("remaining_j", "settled_s", "alive", "died_s", "used_j")


def save_checkpoint(sim: Simulation, folder: Path, next_round: int) -> Path:
    """Write the state after cloud round ``next_round - 1`` to ``folder/checkpoint.pt``."""
    state = {
        "format": FORMAT,
        "scenario": json.dumps(sim.scenario.to_dict()),
        "next_round": next_round,
        "now_s": float(sim.env.now),
        "global_weights": sim.global_weights,
        "battery": {name: torch.from_numpy(getattr(sim.battery, name).copy()) for name in _BATTERY},
        "trained": torch.from_numpy(sim.trained.copy()),
        "trace": {
            name: torch.from_numpy(sim.trace.rows[name].copy()) for name in sim.trace.columns
        },
        "round_rows": [_plain(row) for row in sim.round_rows],
    }
    path = folder / CHECKPOINT
    atomic_write(path, lambda temp: torch.save(state, temp))
    return path


def load_checkpoint(folder: Path) -> dict[str, Any]:
    """The checkpoint of a run folder, or a clear error when there is none to resume."""
    path = Path(folder) / CHECKPOINT
    if not path.is_file():
        raise HierflError(f"--resume {folder}: no {CHECKPOINT} (nothing to resume)")
    state = torch.load(path, weights_only=True)
    if state.get("format") != FORMAT:
        raise HierflError(f"--resume {folder}: checkpoint format {state.get('format')} unknown")
    return state


def checkpoint_scenario(state: dict[str, Any]) -> Scenario:
    """The resolved scenario a checkpoint was taken from."""
    return parse_scenario(json.loads(state["scenario"]), origin="checkpoint")


def restore(sim: Simulation, state: dict[str, Any]) -> None:
    """Put a freshly prepared simulation into the checkpoint's state."""
    for name in _BATTERY:
        getattr(sim.battery, name)[...] = state["battery"][name].numpy()
    sim.trained[...] = state["trained"].numpy()
    sim.trace.load({name: column.numpy() for name, column in state["trace"].items()})
    sim.round_rows[:] = state["round_rows"]
    sim.global_weights = state["global_weights"]
    sim.first_round = int(state["next_round"])
    sim.env = type(sim.env)(initial_time=state["now_s"])


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """Numpy scalars as Python numbers, so the row loads under ``weights_only``."""
    return {key: value.item() if hasattr(value, "item") else value for key, value in row.items()}
