"""Profiles: effective link rates per direction, radio tail keys, and how overrides combine."""

from __future__ import annotations

from pathlib import Path

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


SEED = {  # the tutorial's memory_kb, compute_mflops, bandwidth_kbps, battery_mah
    "mcu": (512, 100, 100, 500),
    "soc": (4096, 5000, 10_000, 5000),
    "mobile": (8192, 50_000, 50_000, 4000),
}
SOURCED = ("esp32s3_wifi", "rpi4", "phone_lte", "nbiot_node", "jetson_edge")


def test_seed_profiles_keep_the_tutorials_figures():
    """mcu, soc and mobile keep the seed tutorial's memory, compute, bandwidth and battery."""
    for name, figures in SEED.items():
        p = BUILTIN_PROFILES[name]
        assert (p.memory_kb, p.compute_mflops, p.bandwidth_kbps, p.battery_mah) == figures


def test_every_builtin_names_its_sources():
    """Each built-in says where its figures come from; the sourced ones name what is assumed."""
    assert set(SOURCED) <= set(BUILTIN_PROFILES)
    for name, profile in BUILTIN_PROFILES.items():
        assert len(profile.source) > 80, name
    for name in SOURCED:
        assert "assum" in BUILTIN_PROFILES[name].source or name == "jetson_edge", name


def test_sourced_profiles_have_real_memory_and_rates():
    """The sourced Pi and phone have GB of memory; the ESP32-S3 runs Wi-Fi at Mbit/s."""
    gib = 1024 * 1024
    assert BUILTIN_PROFILES["rpi4"].memory_kb == 4 * gib
    assert BUILTIN_PROFILES["phone_lte"].memory_kb >= gib
    assert BUILTIN_PROFILES["jetson_edge"].memory_kb == 8 * gib
    assert BUILTIN_PROFILES["esp32s3_wifi"].up_kbps == 20_000


def test_phone_lte_follows_huang_2012():
    """phone_lte: 6 Mbit/s up, 13 down, and the LTE power model and tail of Huang et al.

    Sending at 6 Mbit/s: 438.39 * 6 + 1288.04 = 3918.38 mW; receiving at 13 Mbit/s:
    51.97 * 13 + 1288.04 = 1963.65 mW; tail 11.576 s at 1060 mW.
    """
    phone = BUILTIN_PROFILES["phone_lte"]
    assert (phone.up_kbps, phone.down_kbps) == (6000, 13_000)
    assert phone.power_tx_w == pytest.approx(3.91838, abs=5e-4)
    assert phone.power_rx_w == pytest.approx(1.96365, abs=5e-4)
    assert (phone.tail_s, phone.power_tail_w) == (11.576, 1.060)


def test_derived_figures_match_their_arithmetic():
    """Figures computed from a source equal the arithmetic docs/profiles.md shows."""
    jetson, node = BUILTIN_PROFILES["jetson_edge"], BUILTIN_PROFILES["nbiot_node"]
    assert jetson.compute_mflops == 1024 * 2 * 1020  # cores * FLOP/cycle * MHz
    assert node.compute_mflops == int(82.57 * 64 / 168)  # 31.46 MFLOP/s scaled to 64 MHz
    assert node.power_tx_w == pytest.approx(0.045 * 3.7, abs=5e-3)
    assert node.power_idle_w == pytest.approx(2.7e-6 * 3.7, rel=0.01)
    assert BUILTIN_PROFILES["rpi4"].power_idle_w == pytest.approx(0.575 * 5, abs=0.05)
    assert BUILTIN_PROFILES["rpi4"].power_compute_w == pytest.approx(1.280 * 5)


def test_jetson_edge_serves_as_edge_and_cloud():
    """jetson_edge can be every edge server and the cloud of a run."""
    scenario = hierfl.parse_scenario({
        "run": {"cloud_rounds": 1, "learning": False},
        "topology": {"edges": 2, "edge_profile": "jetson_edge", "cloud_profile": "jetson_edge"},
        "devices": [{"profile": name, "count": 1} for name in SOURCED[:-1]],
    })
    result = hierfl.run(scenario)
    assert len(result.rounds) == 1
    assert sorted(result.devices["profile"].unique()) == sorted(SOURCED[:-1])


def _docs_row(name: str, p: Profile) -> str:
    """The row docs/profiles.md shows for profile ``name``."""
    if p.up_kbps == p.down_kbps:
        link = f"{p.up_kbps:,.0f}"
    else:
        link = f"{p.up_kbps:,.0f} / {p.down_kbps:,.0f}"
    if p.battery_mah is None:
        battery = "mains"
    else:
        joules = p.battery_mah / 1000 * 3600 * p.voltage_v
        battery = f"{p.battery_mah:,.0f} mAh @ {p.voltage_v:g} V = {joules:,.0f} J"
    watts = (p.power_compute_w, p.power_tx_w, p.power_rx_w, p.power_idle_w)
    power = " / ".join(f"{w:g}" for w in watts)
    tail = f"{p.power_tail_w:g} W for {p.tail_s:g} s" if p.tail_s else "none"
    return (f"| {name} | {p.memory_kb:,.0f} | {p.compute_mflops:,.0f} | {link} | "
            f"{p.latency_ms:g} | {battery} | {power} | {tail} |")


def test_docs_table_shows_every_builtin_as_it_is():
    """docs/profiles.md has one row per built-in profile, with the figures the code holds."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "profiles.md").read_text()
    for name, profile in BUILTIN_PROFILES.items():
        assert _docs_row(name, profile) in page, name
