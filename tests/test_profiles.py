"""Profiles: effective link rates per direction, radio tail keys, and how overrides combine."""

from __future__ import annotations

import pytest

import hierfl
from hierfl.profiles import BUILTIN_PROFILES, Profile

BOARD = {
    "memory_kb": 512,
    "compute_mflops": 100,
    "bandwidth_kbps": 1000,
    "latency_ms": 10,
    "voltage_v": 3.7,
    "power_compute_w": 0.2,
    "power_tx_w": 1.0,
    "power_rx_w": 0.5,
    "power_idle_w": 0.01,
}
DEVICES = [{"profile": "mcu", "count": 1}]


def test_directions_default_to_bandwidth():
    """Without uplink_kbps/downlink_kbps both directions run at bandwidth_kbps; no tail."""
    board = Profile(**BOARD)
    assert (board.up_kbps, board.down_kbps) == (1000, 1000)
    assert (board.uplink_kbps, board.downlink_kbps) == (None, None)
    assert (board.tail_s, board.power_tail_w) == (0, 0)


def test_directions_given_apart():
    """uplink_kbps and downlink_kbps each replace bandwidth_kbps in their own direction only."""
    assert Profile(**BOARD, uplink_kbps=6000).down_kbps == 1000
    asymmetric = Profile(**BOARD, uplink_kbps=6000, downlink_kbps=13000)
    assert (asymmetric.up_kbps, asymmetric.down_kbps) == (6000, 13000)


def test_seed_profiles_keep_their_symmetric_link():
    """The tutorial's profiles give no direction of their own: both are bandwidth_kbps."""
    for name in ("mcu", "soc", "mobile"):
        profile = BUILTIN_PROFILES[name]
        assert profile.up_kbps == profile.down_kbps == profile.bandwidth_kbps, name


@pytest.fixture
def lte(monkeypatch) -> Profile:
    """A built-in with explicit directions (6 up, 13 down, 10 nominal), added for the test."""
    profile = Profile(**{**BOARD, "bandwidth_kbps": 10_000}, uplink_kbps=6000,
                      downlink_kbps=13000, tail_s=11, power_tail_w=1)
    monkeypatch.setitem(BUILTIN_PROFILES, "lte", profile)
    return profile


@pytest.mark.parametrize(
    ("table", "up", "down"),
    [
        pytest.param({"battery_mah": 9}, 6000, 13000, id="other key keeps both directions"),
        pytest.param({"bandwidth_kbps": 2000}, 2000, 2000, id="bandwidth sets both directions"),
        pytest.param({"bandwidth_kbps": 2000, "uplink_kbps": 500}, 500, 2000,
                     id="bandwidth with its own uplink"),
        pytest.param({"downlink_kbps": 20000}, 6000, 20000, id="one direction only"),
    ],
)
def test_override_of_a_builtin_with_directions(lte, table, up, down):
    """Overriding bandwidth_kbps drops the built-in's directions; the table's own ones stay."""
    scenario = hierfl.parse_scenario({"profiles": {"lte": table}, "devices": DEVICES})
    profile = scenario.profile("lte")
    assert (profile.up_kbps, profile.down_kbps) == (up, down)
    assert (profile.tail_s, profile.power_tail_w) == (11, 1), "other keys are inherited"
    assert scenario.with_overrides([]).profile("lte") == profile


def test_bandwidth_override_via_set(lte):
    """--set profiles.NAME.bandwidth_kbps on a built-in with directions sets both of them."""
    scenario = hierfl.parse_scenario({"devices": DEVICES})
    profile = scenario.with_overrides(["profiles.lte.bandwidth_kbps=3000"]).profile("lte")
    assert (profile.up_kbps, profile.down_kbps) == (3000, 3000)


def test_later_override_acts_as_in_the_file(lte):
    """with_overrides after a file override gives what the file with both overrides gives."""
    for first in ({"battery_mah": 9}, {"bandwidth_kbps": 2000}, {"uplink_kbps": 7000},
                  {"bandwidth_kbps": 2000, "downlink_kbps": 13000}):
        scenario = hierfl.parse_scenario({"profiles": {"lte": first}, "devices": DEVICES})
        assert scenario.with_overrides([]) == scenario, first
        for key in ("bandwidth_kbps", "uplink_kbps", "power_tail_w"):
            later = scenario.with_overrides([f"profiles.lte.{key}=3000"]).profile("lte")
            both = hierfl.parse_scenario(
                {"profiles": {"lte": {**first, key: 3000}}, "devices": DEVICES}).profile("lte")
            assert later == both, (first, key)
