"""Charging: plugged-in devices run on the charger and their batteries fill at charge_w."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hierfl
from hierfl.scenario import parse_scenario
from hierfl.sim.battery import CATEGORY, FleetBattery

CAPACITY_J = 3.6  # battery_mah = 1, voltage_v = 1
CHARGE_W = 0.01


def charger_scenario(tmp_path: Path, compute_mflops: float, trace: str, **run) -> hierfl.Scenario:
    """One device that spends 1 W computing, nothing else, and charges at 0.01 W."""
    path = tmp_path / "trace.csv"
    path.write_text("device,start_s,end_s,plugged\n" + trace)
    profile = {
        "memory_kb": 1e6, "compute_mflops": compute_mflops, "bandwidth_kbps": 1e6,
        "latency_ms": 0.0, "battery_mah": 1.0, "voltage_v": 1.0, "power_compute_w": 1.0,
        "power_tx_w": 0.0, "power_rx_w": 0.0, "power_idle_w": 0.0, "charge_w": CHARGE_W,
    }
    return parse_scenario({
        "seed": 1,
        "run": {"cloud_rounds": 2, "learning": False, **run},
        "model": {"name": "tiny"},
        "data": {"samples_per_device": 20},
        "selection": {"min_battery": 0.5},
        "availability": {"model": "trace", "path": str(path)},
        "profiles": {"c": profile},
        "devices": [{"profile": "c", "count": 1}],
    })


def compute_flops(tmp_path: Path) -> float:
    """The device's training FLOPs per round, read from a 1 MFLOP/s run's compute time."""
    result = hierfl.run(charger_scenario(tmp_path, 1.0, "c-0,0,1e9,false\n"))
    compute = result.events[result.events["kind"] == "compute"].iloc[0]
    return (compute["t_end"] - compute["t_start"]) * 1e6


def test_charge_fills_up_to_full():
    """Charging stores charge_w * seconds, never past capacity, and says when it stopped."""
    battery = FleetBattery(np.array([10.0, 10.0]), np.zeros(2), charge_w=np.array([1.0, 1.0]))
    battery.remaining_j[:] = [4.0, 9.5]
    stored, until = battery.charge(np.arange(2), np.array([0.0, 0.0]), np.array([2.0, 2.0]))
    assert stored.tolist() == [2.0, 0.5] and until.tolist() == [2.0, 0.5]
    assert battery.remaining_j.tolist() == [6.0, 10.0]


def test_plugged_draw_leaves_the_battery_alone():
    """A plugged-in device's phase counts as used energy but takes nothing from the battery,
    and cannot empty it."""
    battery = FleetBattery(np.array([1.0]), np.zeros(1))
    lasted = battery.draw_many(np.array([0]), 0.0, 5.0, 1.0, "compute", np.array([True]))
    assert lasted.tolist() == [5.0] and battery.remaining_j[0] == 1.0
    assert battery.used_j[0, CATEGORY["compute"]] == 5.0 and battery.alive[0]


def test_charging_crosses_min_battery(tmp_path):
    """A device drained below min_battery (2.5 J of 3.6 J used: 31%) is plugged in at 300 s;
    charging at 0.01 W it reaches 50% (1.8 J) at 300 + (1.8 - 1.1) / 0.01 = 370 s, when the
    waiting cloud round starts. The charge event stores 0.7 J (negative energy_j)."""
    flops = compute_flops(tmp_path)
    scenario = charger_scenario(tmp_path, flops / 2.5e6, "c-0,0,100,false\nc-0,300,1e9,true\n")
    result = hierfl.run(scenario)
    events = result.events
    starts = events.loc[events["kind"] == "cloud_download", "t_start"].tolist()
    assert starts[0] == 0.0 and starts[1] == pytest.approx(370.0, rel=1e-9)
    charges = events[events["kind"] == "charge"]
    first = charges.iloc[0]
    assert first["t_start"] == 300.0 and first["t_end"] == pytest.approx(370.0, rel=1e-9)
    assert first["energy_j"] == pytest.approx(-0.7, rel=1e-9)
    device = result.devices.iloc[0]
    end_s = result.summary["sim_time_s"]
    assert device["charged_j"] == pytest.approx(CHARGE_W * (end_s - 300.0), rel=1e-9)
    assert -charges["energy_j"].sum() == pytest.approx(device["charged_j"], rel=1e-12)
    assert device["energy_j"] == pytest.approx(5.0, rel=1e-9)  # both computes: energy used
    assert device["battery"] == pytest.approx((1.1 + device["charged_j"]) / CAPACITY_J)


def test_a_dead_battery_comes_back_when_charged(tmp_path):
    """A battery that empties mid-compute (5 J needed, 3.6 J held) drops the device; plugged
    in at 300 s it lives again and trains once charged to 50%: 300 + 1.8 / 0.01 = 480 s."""
    flops = compute_flops(tmp_path)
    scenario = charger_scenario(tmp_path, flops / 5e6, "c-0,0,100,false\nc-0,300,1e9,true\n")
    result = hierfl.run(scenario)
    events = result.events
    assert (events["kind"] == "dropout").sum() == 1
    starts = events.loc[events["kind"] == "cloud_download", "t_start"].tolist()
    assert starts[1] == pytest.approx(480.0, rel=1e-9)
    assert not result.devices["dropped"].iloc[0]
    assert result.devices["rounds_trained"].iloc[0] == 1


def test_a_mains_powered_device_that_is_plugged_in_stores_nothing():
    """A device without a battery, plugged in: charging leaves its infinite charge as it is
    (inf - inf made it NaN, and a NaN battery is never above min_battery)."""
    import numpy as np

    from hierfl.sim.battery import FleetBattery

    battery = FleetBattery(np.array([np.inf, 10.0]), np.zeros(2), charge_w=np.array([2.0, 2.0]))
    battery.remaining_j[1] = 4.0
    stored_j, _ = battery.charge(np.array([0, 1]), np.zeros(2), np.full(2, 1.0))
    assert stored_j.tolist() == [0.0, 2.0]
    assert battery.remaining_j.tolist() == [np.inf, 6.0]
