"""Batteries drain by phase and idle time, and empty at the exact instant remaining_j / power."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hierfl.sim.battery import CATEGORY, FleetBattery
from hierfl.sim.cloud import cloud
from hierfl.sim.engine import prepare
from hierfl.sim.runner import simulate


def fleet(capacity_j, idle_w) -> FleetBattery:
    return FleetBattery(np.array(capacity_j, dtype=float), np.array(idle_w, dtype=float))


def test_phase_that_fits_drains_its_energy():
    """A phase within the battery lasts its full time and draws power * seconds."""
    battery = fleet([10.0], [0.0])
    assert battery.draw(0, 2.0, 4.0, 0.5, "tx") == 4.0
    # 10 - 0.5 * 4 = 8 J left, 80 %
    assert battery.remaining_j[0] == pytest.approx(8.0)
    assert battery.fractions()[0] == pytest.approx(0.8)
    assert battery.used_j[0, CATEGORY["tx"]] == pytest.approx(2.0)
    assert battery.settled_s[0] == 6.0
    assert battery.alive[0] and math.isnan(battery.died_s[0])


def test_phase_that_outlasts_the_battery_stops_when_it_empties():
    """A phase longer than the battery stops at remaining_j / power: dead, all capacity used."""
    battery = fleet([10.0, 10.0], [0.0, 0.0])
    # 10 J at 0.5 W lasts 20 s; the phase started at 2 s, so the device dies at 22 s
    lasted = battery.draw(0, 2.0, 100.0, 0.5, "compute")
    assert lasted == 20.0
    assert not battery.alive[0]
    assert battery.died_s[0] == 22.0
    assert battery.remaining_j[0] == 0.0
    assert battery.used_j[0].sum() == 10.0
    assert battery.used_j[0, CATEGORY["compute"]] == 10.0
    assert battery.fractions()[0] == 0.0
    assert battery.alive[1] and battery.remaining_j[1] == 10.0


def test_phase_after_partial_drain_stops_exactly():
    """After 3 J of a 10 J battery, a 2 W phase starting at 5 s ends at 5 + 7 / 2 = 8.5 s."""
    battery = fleet([10.0], [0.0])
    battery.draw(0, 0.0, 3.0, 1.0, "rx")
    lasted = battery.draw(0, 5.0, 10.0, 2.0, "tx")
    assert lasted == 3.5
    assert battery.died_s[0] == 8.5
    assert battery.used_j[0, CATEGORY["rx"]] == 3.0
    assert battery.used_j[0, CATEGORY["tx"]] == 7.0


def test_idle_death_instant_is_exact():
    """Idle drain settled lazily still dies at the exact instant: 10 J at 0.5 W lasts 20 s."""
    battery = fleet([10.0, 100.0], [0.5, 0.5])
    assert not battery.settle(np.array([0, 1]), 4.0).died.any()
    # 4 s idle: 2 J used, 8 J left; 8 / 0.5 = 16 s more, so empty at 20 s
    assert battery.remaining_j[0] == pytest.approx(8.0)
    assert battery.settle(np.array([0, 1]), 30.0).died.tolist() == [True, False]
    assert battery.died_s[0] == pytest.approx(20.0, rel=1e-12)
    assert battery.used_j[0, CATEGORY["idle"]] == pytest.approx(10.0)
    assert not battery.alive[0]
    # device 1: 30 s * 0.5 W = 15 J of 100
    assert battery.remaining_j[1] == pytest.approx(85.0)
    # a dead device is not settled again
    assert not battery.settle(np.array([0]), 50.0).died.any()
    assert battery.died_s[0] == pytest.approx(20.0, rel=1e-12)


def test_mains_never_dies():
    """A mains-powered node (infinite capacity) never runs out and reports a full battery."""
    battery = fleet([math.inf, 1.0], [10.0, 0.0])
    assert battery.draw(0, 0.0, 1e9, 1e6, "compute") == 1e9
    assert not battery.settle(np.array([0]), 1e12).died.any()
    assert battery.alive[0]
    assert battery.fractions().tolist() == [1.0, 1.0]


# Scenario for the end-to-end dropout: one "weak" board (0.9 J, no idle drain) and one mcu,
# under one edge, 40 samples each, dense updates, compact model (18088 bytes dense).
CLOUD_DOWNLOAD_S = 0.020 + 8 * 18088 / (100_000 * 1000)  # backhaul: 0.02144704
ACCESS_S = 0.050 + 8 * 18088 / (100 * 1000)  # mcu-like access link: 1.49704
COMPUTE_S = 3 * 8832 * 40 * 2 / (100 * 1e6)  # 2_119_680 FLOP at 100 MFLOP/s: 0.0211968
CAPACITY_J = 0.1 / 1000 * 3600 * 2.5  # 0.9


def dropout_scenario(make_scenario, weak_profile, **topology):
    return make_scenario(
        run={"cloud_rounds": 2, "learning": True},
        devices=[{"profile": "weak", "count": 1}, {"profile": "mcu", "count": 1}],
        profiles={"weak": weak_profile},
        topology={"edges": 1, **topology},
    )


def test_dropout_mid_upload_end_to_end(make_scenario, weak_profile):
    """A device that empties mid-upload drops out at the exact instant; its update is lost."""
    scenario = dropout_scenario(make_scenario, weak_profile)
    sim = prepare(scenario)
    senders: list[tuple[int, ...]] = []
    aggregate = sim.aggregate

    def spy(node, base, updates):
        senders.append(tuple(u.sender for u in updates))
        return aggregate(node, base, updates)

    sim.aggregate = spy
    sim.env.process(cloud(sim))
    sim.env.run()
    events = sim.trace.to_frame()

    # download 0.3 W * 1.49704 s = 0.449112 J; compute 0.2 W * 0.0211968 s = 0.00423936 J
    remaining_j = CAPACITY_J - 0.3 * ACCESS_S - 0.2 * COMPUTE_S  # 0.44664864 J
    upload_start = CLOUD_DOWNLOAD_S + ACCESS_S + COMPUTE_S  # 1.53968384 s
    # the upload would need 0.95 W * 1.49704 s = 1.422188 J; it lasts 0.44664864 / 0.95 s
    died_s = upload_start + remaining_j / 0.95  # 2.0098403... s

    weak = events[events["node"] == "weak-0"]
    drops = weak[weak["kind"] == "dropout"]
    assert len(drops) == 1
    assert drops["t_start"].iloc[0] == pytest.approx(died_s, rel=1e-12)
    assert drops["t_end"].iloc[0] == drops["t_start"].iloc[0]
    assert drops["cloud_round"].iloc[0] == 0 and drops["edge_round"].iloc[0] == 0
    upload = weak[weak["kind"] == "upload"]
    assert len(upload) == 1
    assert upload["t_start"].iloc[0] == pytest.approx(upload_start, rel=1e-12)
    assert upload["t_end"].iloc[0] == pytest.approx(died_s, rel=1e-12)
    assert upload["energy_j"].iloc[0] == pytest.approx(remaining_j, rel=1e-9)
    assert (weak["t_end"] <= died_s + 1e-12).all(), "nothing of a dead device after its death"
    assert weak["kind"].astype(str).tolist() == ["download", "compute", "upload", "dropout"]

    # only the mcu's update reached the edge, in both cloud rounds; the cloud got the edge's
    assert senders == [(1,), (0,), (1,), (0,)]
    assert sim.trained.tolist() == [0, 2]
    assert sim.battery.used_j[0].sum() == pytest.approx(CAPACITY_J, rel=1e-12)
    assert sim.battery.died_s[0] == pytest.approx(died_s, rel=1e-12)


def test_dropout_in_tables(make_scenario, weak_profile):
    """devices marks the dead device dropped at its death instant, with nothing trained."""
    result = simulate(dropout_scenario(make_scenario, weak_profile))
    devices = result.devices.set_index("device")
    assert devices.at["weak-0", "dropped"]
    assert not devices.at["mcu-1", "dropped"]
    assert devices.at["weak-0", "rounds_trained"] == 0
    assert devices.at["mcu-1", "rounds_trained"] == 2
    assert devices.at["weak-0", "battery"] == 0.0
    assert devices.at["weak-0", "energy_j"] == pytest.approx(CAPACITY_J, rel=1e-12)
    died_s = CLOUD_DOWNLOAD_S + ACCESS_S + COMPUTE_S + (
        CAPACITY_J - 0.3 * ACCESS_S - 0.2 * COMPUTE_S) / 0.95
    assert devices.at["weak-0", "dropped_at_s"] == pytest.approx(died_s, rel=1e-12)
    assert result.rounds["devices_trained"].tolist() == [1, 1]
    assert result.summary["devices_dropped"] == 1


def test_dropout_mid_download_drains_the_whole_flow(make_scenario, weak_profile):
    """The radio draws for the whole of its flow, path latency included.

    cloud_only: the download is one flow from the cloud over backhaul and access, begun at
    0; 0.12 J at 0.3 W lasts 0.4 s, so the device dies at 0.4 s.
    """
    # 0.1 / 3 mAh at 1 V: 0.1 / 3 / 1000 * 3600 * 1.0 = 0.12 J
    weak = {**weak_profile, "battery_mah": 0.1 / 3, "voltage_v": 1.0}
    scenario = dropout_scenario(make_scenario, weak, mode="cloud_only")
    events = simulate(scenario).events
    mine = events[events["node"] == "weak-0"]
    died_s = 0.12 / 0.3
    assert mine["kind"].astype(str).tolist() == ["download", "dropout"]
    download = mine.iloc[0]
    assert download["t_start"] == 0.0
    assert download["t_end"] == pytest.approx(died_s, rel=1e-12)
    assert download["energy_j"] == pytest.approx(0.12, rel=1e-9)
    assert mine.iloc[1]["t_start"] == pytest.approx(died_s, rel=1e-12)


def test_idle_death_end_to_end(make_scenario, weak_profile):
    """A battery that empties while idle drops out at capacity / idle power, never trains.

    0.9 J at 100 W idle lasts 0.009 s: before the model has crossed the backhaul to the
    edge (0.02144704 s). (In cloud_only the device's download flow begins at once.)
    """
    weak = {**weak_profile, "power_idle_w": 100.0}
    scenario = dropout_scenario(make_scenario, weak)
    result = simulate(scenario)
    mine = result.events[result.events["node"] == "weak-0"]
    assert mine["kind"].astype(str).tolist() == ["dropout"]
    assert mine["t_start"].iloc[0] == pytest.approx(0.9 / 100, rel=1e-12)
    assert mine["cloud_round"].iloc[0] == 0
    devices = result.devices.set_index("device")
    assert devices.at["weak-0", "dropped"]
    assert devices.at["weak-0", "energy_idle_j"] == pytest.approx(CAPACITY_J, rel=1e-12)
    assert devices.at["weak-0", "rounds_trained"] == 0
    assert devices.at["mcu-1", "rounds_trained"] == 2
