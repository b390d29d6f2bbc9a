"""FLOP counts: FlopCounterMode's figures, remembered on disk only for built-in models."""

from __future__ import annotations

import json
import os
import time

import pytest
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
    assert [entry["flops"] for entry in stored.values()] == [1344]
    monkeypatch.setattr("hierfl.learn.flops.count_flops", lambda *_: pytest.fail("recounted"))
    assert model_stats(model, (32,), "tiny|10").forward_flops == 1344


@pytest.mark.parametrize(
    "edit",
    [
        lambda entry: {**entry, "flops": 7},
        lambda entry: {**entry, "flops": -1},
        lambda entry: {**entry, "flops": "1344"},
        lambda entry: {**entry, "mac": "00" * 32},
        lambda entry: {**entry, "mac": "not hex"},
        lambda entry: 7,
    ],
)
def test_edited_cache_entry_is_recounted(tmp_path, monkeypatch, edit):
    """An edited count (or MAC) fails its HMAC under the user's key: it is counted afresh."""
    monkeypatch.setenv("HIERFL_CACHE_DIR", str(tmp_path))
    model = build_model("tiny", (32,), 10, seed=0)
    forward_flops(model, torch.zeros(1, 32), "tiny|10")
    stored = json.loads(cache_file().read_text())
    key = next(iter(stored))
    cache_file().write_text(json.dumps({key: edit(stored[key])}))
    assert model_stats(model, (32,), "tiny|10").forward_flops == 1344
    assert json.loads(cache_file().read_text())[key]["flops"] == 1344


def test_cache_key_follows_the_model_structure(tmp_path, monkeypatch):
    """Two models under one name but of different structure get their own counts."""
    monkeypatch.setenv("HIERFL_CACHE_DIR", str(tmp_path))
    narrow, wide = nn.Sequential(nn.Linear(4, 3)), nn.Sequential(nn.Linear(4, 5))
    assert forward_flops(narrow, torch.zeros(1, 4), "same") == 2 * 4 * 3
    assert forward_flops(wide, torch.zeros(1, 4), "same") == 2 * 4 * 5
    assert len(json.loads(cache_file().read_text())) == 2


def test_unwritable_cache_only_costs_a_recount(tmp_path, monkeypatch):
    """A cache folder that cannot be created does not break counting."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HIERFL_CACHE_DIR", str(blocker / "sub"))
    model = nn.Sequential(nn.Linear(4, 3))
    assert forward_flops(model, torch.zeros(1, 4), "x") == 2 * 4 * 3


def test_stale_temporary_files_are_removed(tmp_path, monkeypatch):
    """A write's temporary file left over an hour ago (a killed process) is removed at the
    next write; a fresh one (another process writing now) is kept."""
    monkeypatch.setenv("HIERFL_CACHE_DIR", str(tmp_path))
    old, fresh = tmp_path / ".flops.json.a1.hierfl-tmp", tmp_path / ".flops.json.b2.hierfl-tmp"
    for temp in (old, fresh):
        temp.write_text("{")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    forward_flops(nn.Sequential(nn.Linear(4, 3)), torch.zeros(1, 4), "x")
    assert not old.exists() and fresh.exists()
