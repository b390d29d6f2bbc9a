"""FLOP counts: FlopCounterMode's figures, remembered on disk only for built-in models."""

from __future__ import annotations

import json

import torch
from torch import nn

from hierfl.learn.flops import cache_file, count_flops, forward_flops
from hierfl.learn.models import build_model, model_stats


def test_count_is_flop_counter_mode_and_hand_computed():
    """compact on 32 inputs: 2 * (32*64 + 64*32 + 32*10) = 8832 FLOPs."""
    model = build_model("compact", (32,), 10, seed=0)
    assert count_flops(model, torch.zeros(1, 32)) == 8832


def test_cached_count_is_reused(tmp_path, monkeypatch):
    """A count stored under the key is what later runs get: the model is not run again."""
    monkeypatch.setenv("HIERFL_CACHE_DIR", str(tmp_path))
    model = build_model("tiny", (32,), 10, seed=0)
    assert forward_flops(model, torch.zeros(1, 32), "tiny|10") == 1344
    stored = json.loads(cache_file().read_text())
    assert list(stored.values()) == [1344]
    key = next(iter(stored))
    cache_file().write_text(json.dumps({key: 7}))
    assert model_stats(model, (32,), "tiny|10").forward_flops == 7
    assert model_stats(model, (32,)).forward_flops == 1344  # no key: counted afresh


def test_unwritable_cache_only_costs_a_recount(tmp_path, monkeypatch):
    """A cache folder that cannot be created does not break counting."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HIERFL_CACHE_DIR", str(blocker / "sub"))
    model = nn.Sequential(nn.Linear(4, 3))
    assert forward_flops(model, torch.zeros(1, 4), "x") == 2 * 4 * 3
