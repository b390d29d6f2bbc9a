"""Hypothesis strategies shared by the simulation tests."""

from __future__ import annotations

from hypothesis import strategies as st

import hierfl
from hierfl.scenario import ASSIGN_RULES, Scenario

WEAK_MAH = (0.02, 0.05, 0.08, 0.12, 0.18, 0.3, 1.0)  # 0.2 J to 10.8 J at 3 V


@st.composite
def timing_scenarios(draw, buffered: bool = False) -> Scenario:
    """Small timing-only fleets whose batteries empty in every phase and while idle.

    A 'weak' board holds 0.1 to 11 J: a dense compact download costs it about 0.6 J, a slow
    compute up to a few J, a dense upload 1.5 J; idle power up to 50 W empties it before the
    model arrives. 'nomem' cannot hold the model (skips), 'plug' has no battery. Fixed
    sample counts make devices tie to the float, so edges finish at the same instants.
    Edges aggregate on all, a deadline, or the first k; with ``buffered``, on FedBuff with
    small concurrency and buffers, devices come and go (markov availability), and the cloud
    waits for all edges, a deadline, or a buffer of them.
    """
    mode = draw(st.sampled_from(["hierarchical", "cloud_only"]))
    edges = draw(st.integers(1, 4) if mode == "hierarchical" else st.integers(0, 3))
    extra = st.sampled_from(["weak", "weak", "weak", "nomem", "plug", "mcu", "soc", "mobile"])
    groups = [{"profile": draw(st.sampled_from(["mcu", "soc", "mobile", "weak"])),
               "count": draw(st.integers(1, 6))}]
    for profile in draw(st.lists(extra, min_size=1, max_size=3)):
        groups.append({"profile": profile, "count": draw(st.integers(1, 6))})
    weak = {
        "memory_kb": 512, "compute_mflops": draw(st.sampled_from([0.5, 5.0, 100.0])),
        "bandwidth_kbps": draw(st.sampled_from([100, 1000])), "latency_ms": 30,
        "battery_mah": draw(st.sampled_from(WEAK_MAH) | st.floats(0.01, 1.0)), "voltage_v": 3.0,
        "power_compute_w": 0.5, "power_tx_w": 1.0, "power_rx_w": 0.4,
        "power_idle_w": draw(st.sampled_from([0.0, 0.01, 1.0, 50.0])),
    }
    nomem = {**weak, "memory_kb": 2, "battery_mah": 100.0}
    plug = {key: value for key, value in weak.items() if key != "battery_mah"}
    samples = draw(st.sampled_from([[40, 40], [10, 80]]))
    raw = {
        "seed": draw(st.integers(0, 10_000)),
        "run": {"cloud_rounds": draw(st.integers(1, 3)),
                "edge_rounds": 1 if mode == "cloud_only" else draw(st.integers(1, 2)),
                "local_epochs": draw(st.integers(1, 2)), "learning": False},
        "data": {"samples_per_device": samples},
        "model": {"name": draw(st.sampled_from(["tiny", "compact"]))},
        "compression": {"quantize": draw(st.sampled_from(["none", "int8"])),
                        "prune_ratio": draw(st.sampled_from([0.0, 0.3, 0.7])),
                        "payload": draw(st.sampled_from(["delta", "weights"]))},
        "selection": {"policy": draw(st.sampled_from(["all", "random", "battery"])),
                      "fraction": draw(st.sampled_from([0.3, 0.5, 1.0])),
                      "min_battery": draw(st.sampled_from([0.0, 0.1, 0.5]))},
        "topology": {"mode": mode, "edges": edges,
                     "assign": draw(st.sampled_from(ASSIGN_RULES)),
                     "backhaul": {"bandwidth_kbps": draw(st.sampled_from([1000, 100_000])),
                                  "latency_ms": draw(st.sampled_from([0, 20]))}},
        "devices": groups,
        "profiles": {"weak": weak, "nomem": nomem, "plug": plug},
        "aggregation": draw(st.sampled_from([
            {}, {"trigger": "deadline", "deadline_s": 2.0},
            {"trigger": "deadline", "deadline_s": 8.0}, {"trigger": "first_k", "k": 1},
            {"trigger": "first_k", "k": 2, "overcommit": 2.0}])),
    }
    if buffered:
        raw["aggregation"] = {
            "trigger": "buffered", "concurrency": draw(st.integers(1, 4)),
            "buffer": draw(st.integers(1, 3)), "staleness_exponent": 0.5,
            **draw(st.sampled_from([{}, {"max_staleness": 0}, {"max_staleness": 1}]))}
        raw["availability"] = draw(st.sampled_from([
            {}, {"model": "markov", "mean_online_s": 5.0, "mean_offline_s": 3.0},
            {"model": "markov", "mean_online_s": 6.0, "mean_offline_s": 3.0,
             "plugged_probability": 0.5}]))
        weak["charge_w"] = draw(st.sampled_from([0.0, 2.0]))
        if mode == "hierarchical":
            raw["aggregation"] |= draw(st.sampled_from([
                {}, {"cloud_trigger": "deadline", "cloud_deadline_s": 3.0},
                {"cloud_trigger": "buffered", "cloud_buffer": draw(st.integers(1, 2))}]))
    return hierfl.parse_scenario(raw)
