"""The timing, energy and memory formulas of docs/concepts.md, each pinned by hand."""

from __future__ import annotations

import math

import pytest

from hierfl.costs import (
    aggregate_flops,
    capacity_j,
    compute_s,
    energy_j,
    fits_in_memory,
    seconds_until_empty,
    train_bytes,
    train_flops,
    transfer_s,
)


def test_train_flops():
    """train_flops = 3 * forward_flops * samples * local_epochs (backward ~ 2x forward)."""
    # 3 * 8832 * 40 * 2 = 2_119_680
    assert train_flops(8832, 40, 2) == 2_119_680
    # 3 * 1344 * 1 * 1 = 4032
    assert train_flops(1344, 1, 1) == 4032


def test_compute_s():
    """compute_s = flops / (compute_mflops * 1e6)."""
    # 2_119_680 / (100 * 1e6) = 0.0211968 s on an mcu
    assert compute_s(2_119_680, 100) == pytest.approx(0.0211968, rel=1e-12)
    # 5e9 FLOP at 5000 MFLOP/s = 1 s
    assert compute_s(5e9, 5000) == pytest.approx(1.0, rel=1e-12)


def test_transfer_s_one_link():
    """One link costs latency_ms / 1000 + 8 * bytes / (bandwidth_kbps * 1000)."""
    # 50 / 1000 + 8 * 1000 / 100_000 = 0.05 + 0.08 = 0.13
    assert transfer_s(1000, [(100, 50)]) == pytest.approx(0.13, rel=1e-12)
    # the dense compact model over an mcu link: 0.05 + 8 * 18088 / 100_000 = 1.49704
    assert transfer_s(18088, [(100, 50)]) == pytest.approx(1.49704, rel=1e-12)
    # zero latency leaves serialization alone: 8 * 125 / 1000 = 1 s
    assert transfer_s(125, [(1, 0)]) == pytest.approx(1.0, rel=1e-12)


def test_transfer_s_is_cut_through():
    """Over a path, the latencies add up and the bytes flow at the slowest link's rate."""
    # latency 0.050 + 0.020 = 0.070; bytes 8 * 1000 / 100_000 = 0.080 (the 100 kbps link)
    assert transfer_s(1000, [(100, 50), (8000, 20)]) == pytest.approx(0.15, rel=1e-12)
    assert transfer_s(1000, [(8000, 20), (100, 50)]) == pytest.approx(0.15, rel=1e-12)
    assert transfer_s(1000, []) == 0


def test_aggregate_flops():
    """A weighted average costs one multiply and one add per element per update."""
    # 2 * 4522 * 3 = 27_132
    assert aggregate_flops(4522, 3) == 27_132
    assert aggregate_flops(4522, 0) == 0


def test_energy_j():
    """Energy is power times time."""
    # 0.3 W * 1.49704 s = 0.449112 J
    assert energy_j(0.3, 1.49704) == pytest.approx(0.449112, rel=1e-12)


def test_capacity_j():
    """capacity_j = battery_mah / 1000 * 3600 * voltage_v."""
    # 500 mAh at 3.7 V: 0.5 Ah * 3600 s/h * 3.7 V = 6660 J
    assert capacity_j(500, 3.7) == pytest.approx(6660.0, rel=1e-12)
    # 4000 mAh at 3.85 V: 4 * 3600 * 3.85 = 55_440 J
    assert capacity_j(4000, 3.85) == pytest.approx(55_440.0, rel=1e-12)
    # 0.1 mAh at 2.5 V: 0.0001 * 3600 * 2.5 = 0.9 J
    assert capacity_j(0.1, 2.5) == pytest.approx(0.9, rel=1e-12)


def test_seconds_until_empty():
    """A battery holding remaining_j lasts remaining_j / power_w; forever at 0 W."""
    # 10 J / 0.5 W = 20 s
    assert seconds_until_empty(10.0, 0.5) == pytest.approx(20.0, rel=1e-12)
    # 0.9 J / 0.95 W = 0.947368... s
    assert seconds_until_empty(0.9, 0.95) == pytest.approx(0.9 / 0.95, rel=1e-12)
    assert seconds_until_empty(1.0, 0.0) == math.inf


def test_train_bytes():
    """train_bytes = 4 * (2 * n_params + batch_size * activations_per_sample)."""
    # compact: 4 * (2 * 4522 + 8 * 266) = 4 * (9044 + 2128) = 4 * 11_172 = 44_688
    assert train_bytes(4522, 8, 266) == 44_688
    # tiny, batch 1: 4 * (2 * 698 + 106) = 4 * 1502 = 6008
    assert train_bytes(698, 1, 106) == 6008


def test_fits_in_memory():
    """A device fits when memory_kb * 1024 >= the bytes needed (KiB, not kB)."""
    # 44 KiB = 45_056 bytes >= 44_688; 43 KiB = 44_032 < 44_688
    assert fits_in_memory(44, 44_688)
    assert not fits_in_memory(43, 44_688)
    # the boundary is inclusive: 1 KiB holds exactly 1024 bytes
    assert fits_in_memory(1, 1024)
    assert not fits_in_memory(1, 1025)
