"""Aggregation triggers: the ``[aggregation]`` keys, and what each trigger does to a round."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hierfl
from hierfl.errors import ScenarioError
from hierfl.scenario import Scenario, parse_scenario
from hierfl.sim.flows import solve
from tests.conftest import WEAK, small_raw
from tests.test_flows_simgrid import simgrid


def scenario_error(aggregation: dict, **sections) -> str:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(small_raw(aggregation=aggregation, **sections))
    return str(caught.value)


def test_defaults_wait_for_everyone():
    """Without an [aggregation] table, edges and the cloud wait for all."""
    aggregation = parse_scenario(small_raw()).aggregation
    assert (aggregation.trigger, aggregation.cloud_trigger) == ("all", "all")
    assert aggregation.overcommit == 1.3 and aggregation.staleness_exponent == 0.5


@pytest.mark.parametrize(
    ("aggregation", "shown"),
    [
        ({"trigger": "deadline", "deadline_s": 5.0, "k": 1},
         "aggregation.k: only with trigger = 'first_k', not with trigger = 'deadline'"),
        ({"trigger": "first_k", "k": 1, "deadline_s": 5.0},
         "aggregation.deadline_s: only with trigger = 'deadline'"),
        ({"overcommit": 2.0}, "aggregation.overcommit: only with trigger = 'first_k'"),
        ({"trigger": "deadline", "max_staleness": 2},
         "aggregation.max_staleness: only with trigger = 'buffered' or cloud_trigger = "
         "'buffered'"),
        ({"trigger": "deadline"}, "aggregation.deadline_s: required with trigger = 'deadline'"),
        ({"trigger": "first_k"}, "aggregation.k: required with trigger = 'first_k'"),
        ({"trigger": "buffered", "buffer": 2},
         "aggregation.concurrency: required with trigger = 'buffered'"),
        ({"cloud_trigger": "buffered"},
         "aggregation.cloud_buffer: required with cloud_trigger = 'buffered'"),
        ({"trigger": "first_k", "k": 3}, "aggregation.k: must be <= the fleet's 2 devices: 3"),
        ({"trigger": "deadline", "deadline_s": -1.0}, "aggregation.deadline_s: must be > 0"),
        ({"cloud_trigger": "deadline", "cloud_deadline_s": 0.0},
         "aggregation.cloud_deadline_s: must be > 0"),
        ({"trigger": "first_k", "k": 1, "overcommit": 0.5},
         "aggregation.overcommit: must be >= 1"),
        ({"trigger": "soon"}, "aggregation.trigger"),
    ],
)
def test_bad_aggregation_is_one_line_naming_the_key(aggregation, shown):
    """A key with the wrong trigger, a missing required key, k above the fleet, a negative
    duration: one line that names the key."""
    message = scenario_error(aggregation)
    assert shown in message and "\n" not in message


def test_cloud_trigger_needs_a_hierarchy():
    """In cloud_only the cloud aggregates the devices: only the edge trigger applies."""
    message = scenario_error(
        {"cloud_trigger": "deadline", "cloud_deadline_s": 3.0},
        topology={"mode": "cloud_only", "edges": 1},
    )
    assert "aggregation.cloud_trigger: needs topology.mode = 'hierarchical'" in message


def test_resolved_scenario_reads_back():
    """A resolved scenario (defaults written out) validates again unchanged: the defaults of
    keys another trigger reads are not 'given'."""
    scenario = parse_scenario(small_raw(aggregation={"trigger": "first_k", "k": 2}))
    again = parse_scenario(scenario.to_dict())
    assert again == scenario
    plain = parse_scenario(small_raw())
    assert parse_scenario(plain.to_dict()) == plain


# ----- what the triggers do to a round (hand-computed; timing-only, no cell: no sharing)

BOARD = {**WEAK, "battery_mah": 500.0, "voltage_v": 3.7}
FAST_MFLOPS, SLOW_MFLOPS = 100.0, 1.0
TRAIN_FLOPS = 3 * 8_832 * 40 * 2  # compact model, 40 samples, 2 local epochs
MODEL_BYTES = 4 * 4_522  # dense float32 both ways
TRANSFER_S = 0.050 + 8 * MODEL_BYTES / 100_000  # 1.49704 s over a 100 kbps, 50 ms link
START_S = 0.020 + 8 * MODEL_BYTES / 100_000_000  # the edge has the model (default backhaul)
FAST_DONE_S = START_S + 2 * TRANSFER_S + TRAIN_FLOPS / (FAST_MFLOPS * 1e6)  # 3.0367 s
SLOW_DONE_S = START_S + 2 * TRANSFER_S + TRAIN_FLOPS / (SLOW_MFLOPS * 1e6)  # 5.1352 s


def three_boards(aggregation: dict, cloud_rounds: int = 1, **sections) -> Scenario:
    """Two fast boards and one slow one (fast-0, slow-1, fast-2) under one edge."""
    sections.setdefault("profiles", {"fast": {**BOARD, "compute_mflops": FAST_MFLOPS},
                                     "slow": {**BOARD, "compute_mflops": SLOW_MFLOPS}})
    return parse_scenario(small_raw(
        aggregation=aggregation, run={"cloud_rounds": cloud_rounds},
        devices=[{"profile": "fast", "count": 2}, {"profile": "slow", "count": 1}],
        **sections))


def of_kind(result: hierfl.Result, kind: str) -> pd.DataFrame:
    return result.events[result.events["kind"] == kind]


def test_deadline_cuts_the_slow_device():
    """deadline_s = 4: the edge round starts at 0.0214 s (the model crossed the backhaul);
    the fast boards arrive at 3.037 s and are aggregated at 4.0214 s; the slow one keeps
    working (its energy is spent), arrives at 5.135 s as a late update, and is discarded."""
    result = hierfl.run(three_boards({"trigger": "deadline", "deadline_s": 4.0}))
    aggregate = of_kind(result, "edge_aggregate")
    assert aggregate["t_start"].tolist() == [pytest.approx(START_S + 4.0, rel=1e-12)]
    upload = of_kind(result, "upload")
    uploads = dict(zip(upload["node"].astype(str), upload["t_end"], strict=True))
    assert uploads["fast-0"] == pytest.approx(FAST_DONE_S, rel=1e-12)
    assert uploads["slow-1"] == pytest.approx(SLOW_DONE_S, rel=1e-12)
    late = of_kind(result, "late")
    assert late["node"].astype(str).tolist() == ["slow-1"]
    assert late["t_start"].tolist() == late["t_end"].tolist() == [uploads["slow-1"]]
    assert late["bytes"].tolist() == [MODEL_BYTES]
    rounds = result.rounds
    assert rounds["updates_used"].tolist() == [2] and rounds["updates_late"].tolist() == [1]
    assert rounds["devices_trained"].tolist() == [2]
    slow_j = (0.30 * TRANSFER_S + 0.20 * TRAIN_FLOPS / (SLOW_MFLOPS * 1e6)
              + 0.95 * TRANSFER_S)
    assert rounds["energy_wasted_j"].tolist() == [pytest.approx(slow_j, rel=1e-12)]
    devices = result.devices.set_index("device")
    assert devices["late_updates"].to_dict() == {"fast-0": 0, "slow-1": 1, "fast-2": 0}
    assert devices["rounds_trained"].to_dict() == {"fast-0": 1, "slow-1": 0, "fast-2": 1}


def test_deadline_closes_early_when_all_have_arrived():
    """A deadline later than every arrival closes the round at the last arrival, as all."""
    late = hierfl.run(three_boards({"trigger": "deadline", "deadline_s": 60.0}))
    everyone = hierfl.run(three_boards({}))
    pd.testing.assert_frame_equal(late.events, everyone.events, check_exact=True)


def test_busy_device_is_not_a_candidate():
    """The slow board is still uploading when the second cloud round starts: only the two
    fast boards download in that round."""
    result = hierfl.run(three_boards({"trigger": "deadline", "deadline_s": 4.0}, 2))
    second = of_kind(result, "download")
    second = second[second["cloud_round"] == 1]
    assert sorted(second["node"].astype(str)) == ["fast-0", "fast-2"]
    assert second["t_start"].min() < SLOW_DONE_S


def test_first_k_over_selects_and_takes_the_first_k():
    """k = 2, overcommit 1.5: ceil(3.0) = 3 selected; the edge aggregates at the second
    arrival (3.037 s) and the slow board's update is late."""
    result = hierfl.run(three_boards({"trigger": "first_k", "k": 2, "overcommit": 1.5}))
    assert len(of_kind(result, "download")) == 3
    assert of_kind(result, "edge_aggregate")["t_start"].tolist() == [
        pytest.approx(FAST_DONE_S, rel=1e-12)]
    assert of_kind(result, "late")["node"].astype(str).tolist() == ["slow-1"]
    assert result.rounds["updates_used"].tolist() == [2]


def test_first_k_selects_ceil_overcommit_k():
    """k = 1, overcommit 1.3 over three candidates: ceil(1.3) = 2 devices selected (the
    'all' policy's first two), and the first to arrive is aggregated."""
    result = hierfl.run(three_boards({"trigger": "first_k", "k": 1}))
    assert sorted(of_kind(result, "download")["node"].astype(str)) == ["fast-0", "slow-1"]
    assert of_kind(result, "late")["node"].astype(str).tolist() == ["slow-1"]
    assert result.rounds["updates_used"].tolist() == [1]


# ----- flows of overlapping rounds share the cell exactly


def overlapping_rounds(trigger: dict) -> Scenario:
    """Slow boards still upload when the next round's fast boards upload over one cell."""
    return parse_scenario(small_raw(
        aggregation=trigger, run={"cloud_rounds": 3},
        topology={"edges": 1, "cell": {"bandwidth_kbps": 300, "latency_ms": 5}},
        profiles={"fast": {**BOARD, "compute_mflops": 100.0},
                  "slow": {**BOARD, "compute_mflops": 0.5, "bandwidth_kbps": 60}},
        devices=[{"profile": "fast", "count": 3}, {"profile": "slow", "count": 3}]))


def cell_flows(result: hierfl.Result, scenario: Scenario, kind: str) -> dict:
    """Every device flow of ``kind`` over the one cell as a single solver case: byte phases
    from each event's start plus its path latency, at its profile's access cap."""
    flows = of_kind(result, kind)
    profile = flows["node"].astype(str).str.split("-").str[0]
    latency_s = (profile.map(lambda p: scenario.profile(p).latency_ms).to_numpy() + 5) / 1000
    kbps = profile.map(lambda p: scenario.profile(p).bandwidth_kbps).to_numpy()
    return {"start_s": flows["t_start"].to_numpy() + latency_s,
            "size_bytes": flows["bytes"].to_numpy(float), "cap_bytes_s": kbps * 1000 / 8,
            "paths": np.zeros((len(flows), 1), dtype=np.int64),
            "capacity_bytes_s": np.array([300 * 1000 / 8]), "stop_s": None,
            }, flows["t_end"].to_numpy()


@pytest.mark.parametrize("trigger", [{"trigger": "deadline", "deadline_s": 6.0},
                                     {"trigger": "first_k", "k": 2}])
def test_overlapping_rounds_share_the_cell_as_one_solve(trigger):
    """Late uploads of one round and the uploads of the next share the cell: every flow of
    the run ends where one max-min solve of all of them at once ends it, and where SimGrid
    does; and the late uploads really overlap the next round's."""
    scenario = overlapping_rounds(trigger)
    result = hierfl.run(scenario)
    late = of_kind(result, "late")
    uploads = of_kind(result, "upload")
    overlapping = [(uploads["cloud_round"] > row.cloud_round)
                   & (uploads["t_start"] < row.t_start) for row in late.itertuples()]
    assert np.any(overlapping)
    for kind in ("download", "upload"):
        problem, end_s = cell_flows(result, scenario, kind)
        np.testing.assert_allclose(solve(**problem).end_s, end_s, rtol=1e-12, atol=0)
        reference = simgrid([problem])[0]
        np.testing.assert_allclose(reference["end_s"], end_s, rtol=1e-9, atol=0)


def test_wasted_energy_counts_the_tail_after_a_late_upload():
    """With a 1 s radio tail at 0.5 W, the slow board's late work in cloud round 0 wastes
    its download, compute and upload energy plus the 0.5 J tail that followed its upload
    (charged when round 1 closed, after the tail ended); nothing is wasted in round 1."""
    tail = {"tail_s": 1.0, "power_tail_w": 0.5}
    profiles = {"fast": {**BOARD, **tail, "compute_mflops": FAST_MFLOPS},
                "slow": {**BOARD, **tail, "compute_mflops": SLOW_MFLOPS}}
    result = hierfl.run(three_boards({"trigger": "deadline", "deadline_s": 4.0}, 2,
                                     profiles=profiles))
    slow_j = (0.30 * TRANSFER_S + 0.20 * TRAIN_FLOPS / (SLOW_MFLOPS * 1e6)
              + 0.95 * TRANSFER_S)
    assert result.rounds["sim_time_s"].iloc[1] > SLOW_DONE_S + 1.0
    assert result.rounds["energy_wasted_j"].tolist() == [
        pytest.approx(slow_j + 0.5, rel=1e-12), 0.0]


def test_timeline_draws_late_uploads_apart(tmp_path):
    """The timeline finds the upload that ended at its device's late instant (and only it)
    and draws it in its own colour, named in the legend."""
    from hierfl import plots

    result = hierfl.run(three_boards({"trigger": "deadline", "deadline_s": 4.0}))
    frame = pd.DataFrame({"kind": result.events["kind"].astype(str),
                          "node": result.events["node"].astype(str),
                          "t_start": result.events["t_start"],
                          "t_end": result.events["t_end"]})
    marked = frame[plots.late_uploads(frame)]
    assert marked["node"].tolist() == ["slow-1"] and set(marked["kind"]) == {"upload"}
    assert plots.plot_timeline(result, tmp_path / "timeline.png").stat().st_size > 0
    assert "late_upload" in plots.PHASE_COLOURS and "late" in plots.PHASE_LABELS["late_upload"]


def test_an_empty_round_beside_open_work_hands_out_nothing():
    """A lone slow board misses the deadline of edge round 0 and is still at work in edge
    round 1, which then has no candidate (and waits for none: max_wait_s is short): nothing
    is handed out and nothing aggregated, and the open job is not taken for the new round's
    (its update still comes late)."""
    result = hierfl.run(parse_scenario(small_raw(
        aggregation={"trigger": "deadline", "deadline_s": 4.0},
        run={"cloud_rounds": 1, "edge_rounds": 2, "max_wait_s": 0.5},
        profiles={"slow": {**BOARD, "compute_mflops": SLOW_MFLOPS}},
        devices=[{"profile": "slow", "count": 1}])))
    assert of_kind(result, "download")["edge_round"].tolist() == [0]
    assert of_kind(result, "edge_aggregate").empty
    late = of_kind(result, "late")
    assert late["edge_round"].tolist() == [0]
    assert late["t_start"].tolist() == [pytest.approx(SLOW_DONE_S, rel=1e-12)]


def test_a_round_with_everyone_at_work_waits_for_the_first_done():
    """Edge round 1 has no candidate while the lone slow board is still at work on round 0:
    it waits until that work is over (its late update arrives) and hands the board the new
    round then, instead of spinning or giving up."""
    result = hierfl.run(parse_scenario(small_raw(
        aggregation={"trigger": "deadline", "deadline_s": 4.0},
        run={"cloud_rounds": 1, "edge_rounds": 2},
        profiles={"slow": {**BOARD, "compute_mflops": SLOW_MFLOPS}},
        devices=[{"profile": "slow", "count": 1}])))
    downloads = of_kind(result, "download")
    assert downloads["edge_round"].tolist() == [0, 1]
    assert downloads["t_start"].tolist() == [START_S, pytest.approx(SLOW_DONE_S, rel=1e-12)]
    assert of_kind(result, "late")["edge_round"].tolist() == [0, 1]
    assert of_kind(result, "edge_aggregate").empty
