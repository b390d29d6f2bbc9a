"""Forward FLOPs counted by torch's FlopCounterMode, remembered on disk for built-in models.

Counting runs the model under a dispatch mode whose first use imports TorchDynamo (about
1.5 s, more than a whole small run). A built-in model's count depends only on its name,
input shape, classes and the torch version, so those counts are kept in a small JSON file
(``$HIERFL_CACHE_DIR``, else ``$XDG_CACHE_HOME/hierfl``, else ``~/.cache/hierfl``).
Custom models are always counted afresh.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hierfl.results import atomic_write


def cache_file() -> Path:
    """Where remembered counts live."""
    explicit = os.environ.get("HIERFL_CACHE_DIR")
    if explicit:
        return Path(explicit) / "flops.json"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hierfl" / "flops.json"


def count_flops(model: nn.Module, sample: torch.Tensor) -> int:
    """FLOPs of ``model(sample)`` (2 per multiply-accumulate), in eval mode, no gradients."""
    was_training = model.training
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(sample)
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def forward_flops(model: nn.Module, sample: torch.Tensor, cache_key: str | None = None) -> int:
    """``count_flops``, looked up in and added to the disk cache when ``cache_key`` is given."""
    if cache_key is None:
        return count_flops(model, sample)
    key = f"{cache_key}|{tuple(sample.shape[1:])}|torch {torch.__version__}"
    path = cache_file()
    known = _read(path)
    if key not in known:
        known[key] = count_flops(model, sample)
        _write(path, known)
    return int(known[key])


def _read(path: Path) -> dict[str, int]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _write(path: Path, known: dict[str, int]) -> None:
    """Best effort: a cache that cannot be written only costs the next run the recount."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda temp: Path(temp).write_text(json.dumps(known, indent=1)))
    except OSError:
        pass
