"""Forward FLOPs counted by torch's FlopCounterMode, remembered on disk for built-in models.

Counting runs the model under a dispatch mode whose first use imports TorchDynamo (about
1.5 s, more than a whole small run). A built-in model's count depends only on its structure
and input shape and on the torch version, so those counts are kept in a small JSON file in
the user's hierfl folder (``hierfl.cache``). Each entry is keyed by a hash of the model's
structure (its modules, parameter and buffer shapes) and carries an HMAC under the user's
key: an entry that was edited, or that no longer matches the model, is counted afresh, so
the cache can change how long a run takes but never what it reports. Custom models are
always counted afresh (their ``forward`` may differ where their modules do not).
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import suppress
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hierfl.cache import cache_dir, sign, user_key, verify
from hierfl.errors import OutputError
from hierfl.results import TEMP_SUFFIX, atomic_write

STALE_S = 3600.0
"""Age after which a temporary file in the cache is a killed process's leftover, s."""


def cache_file() -> Path:
    """Where remembered counts live."""
    return cache_dir() / "flops.json"


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


def structure_key(model: nn.Module, sample: torch.Tensor) -> str:
    """A hash of what a count depends on: modules, tensor shapes, input shape, torch version."""
    tensors = [
        (name, tuple(t.shape), str(t.dtype))
        for name, t in [*model.named_parameters(), *model.named_buffers()]
    ]
    text = repr((repr(model), tensors, tuple(sample.shape[1:]), str(sample.dtype),
                 torch.__version__))
    return hashlib.sha256(text.encode()).hexdigest()


def forward_flops(model: nn.Module, sample: torch.Tensor, cache_key: str | None = None) -> int:
    """``count_flops``, looked up in and added to the disk cache when ``cache_key`` is given."""
    if not cache_key:
        return count_flops(model, sample)
    key = f"{cache_key}|{structure_key(model, sample)}"
    path, secret = cache_file(), user_key()
    known = _read(path)
    flops = _trusted(known.get(key), key, secret)
    if flops is None:
        flops = count_flops(model, sample)
        if secret is not None:
            known[key] = {"flops": flops, "mac": sign(_signed(key, flops), secret).hex()}
            _write(path, known)
    return flops


def _signed(key: str, flops: int) -> bytes:
    return f"{key}={flops}".encode()


def _trusted(entry: object, key: str, secret: bytes | None) -> int | None:
    """The entry's count when it is well formed and its HMAC checks out, else None."""
    if not isinstance(entry, dict):
        return None
    flops, mac = entry.get("flops"), entry.get("mac")
    if type(flops) is not int or flops < 0 or not isinstance(mac, str):
        return None
    try:
        tag = bytes.fromhex(mac)
    except ValueError:
        return None
    return flops if verify(_signed(key, flops), tag, secret) else None


def _read(path: Path) -> dict[str, object]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _write(path: Path, known: dict[str, object]) -> None:
    """Best effort: a cache that cannot be written only costs the next run the recount."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        atomic_write(path, lambda temp: Path(temp).write_text(json.dumps(known, indent=1)))
    except (OSError, OutputError):
        pass


def _remove_stale_temps(path: Path) -> None:
    """Remove temporary files of ``path`` that a killed process left over an hour ago.

    Several processes may share the cache, so a fresh temporary file may be another
    process's write in progress: only old ones are removed.
    """
    now_s = time.time()
    for temp in path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"):
        with suppress(OSError):
            if now_s - temp.stat().st_mtime > STALE_S:
                temp.unlink()
