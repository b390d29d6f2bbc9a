"""The cloud's triggers over the edges: a deadline, and FedBuff's buffer (hierarchical mode)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hierfl
from hierfl.errors import ScenarioError
from hierfl.scenario import parse_scenario
from hierfl.sim import cloud_async
from hierfl.sim.backhaul import Backhaul
from hierfl.sim.engine import prepare
from hierfl.sim.flows import solve
from hierfl.sim.network import UP
from tests.conftest import small_raw
from tests.test_triggers import BOARD, FAST_MFLOPS, MODEL_BYTES, SLOW_DONE_S, SLOW_MFLOPS

BACKHAUL_S = 0.020 + 8 * MODEL_BYTES / 100_000_000  # default backhaul: 20 ms, 100 Mbit/s
AGGREGATION_S = 1e-8  # an edge averaging one compact update: a few ns, within this


def two_edges(aggregation: dict, cloud_rounds: int = 4, **sections) -> dict:
    """A fast board under edge-0 and a slow one (5.1 s a round) under edge-1."""
    return small_raw(
        aggregation=aggregation, run={"cloud_rounds": cloud_rounds, "edge_rounds": 1},
        topology={"mode": "hierarchical", "edges": 2},
        profiles={"fast": {**BOARD, "compute_mflops": FAST_MFLOPS},
                  "slow": {**BOARD, "compute_mflops": SLOW_MFLOPS}},
        devices=[{"profile": "fast", "count": 1}, {"profile": "slow", "count": 1}], **sections)


def of_kind(result, kind: str) -> pd.DataFrame:
    events = result.events
    frame = events[events["kind"] == kind].sort_values("t_start", kind="stable")
    return frame.assign(node=frame["node"].astype(str))


def test_cloud_deadline_aggregates_what_arrived_and_the_slow_edge_comes_late():
    """cloud_deadline_s = 4: the cloud aggregates edge-0's model at 4.0 s; edge-1's arrives
    at 5.1352 + 0.0214 s (and its aggregation's few ns), a late instant on edge-1,
    discarded. Round 1 (from 4.0 s) has only edge-0, edge-1 being at work; round 2 has both
    again. rounds.csv counts the late edge models apart (edge_models_late): the boards'
    updates were all aggregated by their edges."""
    result = hierfl.run(parse_scenario(two_edges(
        {"cloud_trigger": "deadline", "cloud_deadline_s": 4.0})))
    aggregations = of_kind(result, "cloud_aggregate")
    assert aggregations["t_start"].iloc[0] == pytest.approx(4.0, rel=1e-12)
    late = of_kind(result, "late")
    assert late["node"].tolist() == ["edge-1", "edge-1"]
    assert late["cloud_round"].tolist() == [0, 2]
    assert late["t_start"].iloc[0] == pytest.approx(SLOW_DONE_S + BACKHAUL_S, abs=AGGREGATION_S)
    downloads = of_kind(result, "cloud_download")
    by_round = downloads.groupby("cloud_round")["node"].apply(list).to_dict()
    assert by_round == {0: ["edge-0", "edge-1"], 1: ["edge-0"], 2: ["edge-0", "edge-1"],
                        3: ["edge-0"]}
    rounds = result.rounds.set_index("cloud_round")
    assert rounds["edge_models_late"].tolist() == [1, 0, 1, 0]
    assert rounds["updates_late"].tolist() == [0, 0, 0, 0]


def test_cloud_buffered_weighs_stale_edge_models(monkeypatch):
    """cloud_buffer = 1: every arrival is aggregated, the arriving edge gets the new model.
    edge-0 is back at 3.058 s (fresh), edge-1 at 5.157 s (handed before aggregation 0: 1
    stale), edge-0 at 6.116 s (handed after aggregation 0, arriving after 1: 1 stale),
    edge-0 at 9.175 s (fresh)."""
    seen = []
    step = cloud_async.buffered.staleness_step

    def spy(sim, node, model, deltas, samples, staleness):
        seen.append(list(staleness))
        return step(sim, node, model, deltas, samples, staleness)

    monkeypatch.setattr(cloud_async.buffered, "staleness_step", spy)
    raw = two_edges({"cloud_trigger": "buffered", "cloud_buffer": 1})
    raw["run"]["learning"] = True
    result = hierfl.run(parse_scenario(raw))
    assert seen == [[0], [1], [1], [0]]
    times = of_kind(result, "cloud_aggregate")["t_start"].tolist()
    assert times[1] == pytest.approx(SLOW_DONE_S + BACKHAUL_S, abs=AGGREGATION_S)
    assert np.isfinite(result.rounds["accuracy"]).all()


def test_cloud_buffered_max_staleness_discards_stale_edges():
    """With max_staleness 0 the stale edge models are late, never aggregated (four
    aggregations need more arrivals); each late instant carries the cloud round its edge was
    handed the model in, and rounds.csv counts them. slow-1's work still out at the end is a
    device's late update."""
    result = hierfl.run(parse_scenario(two_edges(
        {"cloud_trigger": "buffered", "cloud_buffer": 1, "max_staleness": 0})))
    late = of_kind(result, "late")
    late = late[late["node"].str.startswith("edge")]  # (slow-1 is still at work at the end)
    assert len(late) >= 2
    assert len(of_kind(result, "cloud_aggregate")) == 4
    downloads = of_kind(result, "cloud_download")
    for row in late.itertuples():  # the round of the edge's last model before it came late
        mine = downloads[(downloads["node"] == row.node) & (downloads["t_start"] < row.t_start)]
        assert row.cloud_round == mine["cloud_round"].iloc[-1]
    assert int(result.rounds["edge_models_late"].sum()) == len(late)


def test_backhaul_replans_transfers_that_overlap_exactly():
    """Two edge uploads over a 200 kbps core, the second starting 0.5 s after the first: the
    Backhaul's ends equal one max-min solve of both flows."""
    raw = two_edges({"cloud_trigger": "deadline", "cloud_deadline_s": 4.0})
    raw["topology"]["core"] = {"bandwidth_kbps": 200}
    sim = prepare(parse_scenario(raw))
    backhaul = Backhaul(sim)
    ends = {}

    def send(edge, delay_s):
        yield sim.env.timeout(delay_s)
        ends[edge] = yield from backhaul.transfer(edge, "edge_upload", 20_000, (0, -1))

    sim.env.process(send(0, 0.0))
    sim.env.process(send(1, 0.5))
    sim.env.run()
    paths, latency_s = sim.links.edge_paths(np.array([0, 1]), UP)
    want = solve(np.array([0.0, 0.5]) + latency_s, np.full(2, 20_000.0), np.full(2, np.inf),
                 paths, sim.links.capacity_bytes_s)
    assert [ends[0], ends[1]] == pytest.approx(want.end_s.tolist(), rel=1e-12)
    assert ends[0] > 0.5 + latency_s[1]  # they did overlap


def test_cloud_triggers_are_reproducible():
    """Same scenario and seed: identical events, under both cloud triggers."""
    for aggregation in ({"cloud_trigger": "deadline", "cloud_deadline_s": 4.0},
                        {"cloud_trigger": "buffered", "cloud_buffer": 1}):
        first = hierfl.run(parse_scenario(two_edges(aggregation))).events
        second = hierfl.run(parse_scenario(two_edges(aggregation))).events
        pd.testing.assert_frame_equal(first, second)


@pytest.mark.parametrize(
    ("sections", "shown"),
    [
        ({"distillation": {"enabled": True}},
         "distillation.enabled: only with cloud_trigger = 'all'"),
        ({"model": {"name": "compact", "variants": [1.0, 0.5]},
          "aggregation": {"cloud_trigger": "buffered", "cloud_buffer": 1}},
         "aggregation.cloud_trigger: 'buffered' is not simulated with model.variants"),
        ({"topology": {"mode": "cloud_only", "edges": 1}},
         "aggregation.cloud_trigger: needs topology.mode = 'hierarchical'"),
    ],
)
def test_cloud_trigger_refuses_what_it_does_not_simulate(sections, shown):
    """FedDF, model families under a buffered cloud, cloud_only: one line naming the key."""
    raw = two_edges({"cloud_trigger": "deadline", "cloud_deadline_s": 4.0})
    raw.update(sections)
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(raw)
    assert shown in str(caught.value) and "\n" not in str(caught.value)


def test_no_checkpoint_while_edges_may_be_at_work(tmp_path):
    """Under a cloud deadline an edge can be at work when a round closes: no checkpoint is
    written (a resume would lose it), and the run still completes."""
    from hierfl.sim.runner import simulate

    scenario = parse_scenario(two_edges({"cloud_trigger": "deadline", "cloud_deadline_s": 4.0}))
    result = simulate(scenario, checkpoint_dir=tmp_path)
    assert len(result.rounds) == 4
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_buffered_cloud_whose_fleet_dies_reports_its_first_round():
    """Both boards empty their tiny batteries in round 0 before any edge model arrives: the
    buffered cloud ends the run, still reporting round 0 (no aggregation)."""
    raw = two_edges({"cloud_trigger": "buffered", "cloud_buffer": 1})
    for profile in raw["profiles"].values():
        profile["battery_mah"] = 0.02
    result = hierfl.run(parse_scenario(raw))
    assert result.rounds["cloud_round"].tolist() == [0]
    assert of_kind(result, "cloud_aggregate").empty
    assert (result.events["kind"] == "dropout").sum() == 2


def test_work_still_out_when_the_run_ends_is_late():
    """One cloud round with a 4 s cloud deadline: the slow board's upload ends at 5.135 s,
    after the run ended at 4.0 s; no aggregation will ever take it: a late update whose
    energy is wasted."""
    result = hierfl.run(parse_scenario(two_edges(
        {"cloud_trigger": "deadline", "cloud_deadline_s": 4.0}, cloud_rounds=1)))
    rounds = result.rounds.iloc[0]
    assert (rounds["updates_used"], rounds["updates_late"]) == (1, 1)
    assert rounds["energy_wasted_j"] > 0
    assert result.devices.set_index("device").at["slow-1", "late_updates"] == 1


def test_a_buffered_cloud_keeps_an_edge_whose_round_brought_nothing():
    """Under a 4 s edge deadline an edge whose only selected board is the slow one sends
    nothing that round; the buffered cloud hands it the model again, so it keeps training
    its fast board in later rounds."""
    raw = two_edges({"trigger": "deadline", "deadline_s": 4.0, "cloud_trigger": "buffered",
                     "cloud_buffer": 1}, cloud_rounds=12)
    raw["selection"] = {"policy": "random", "fraction": 0.5, "min_battery": 0.0}
    raw["devices"] = [{"profile": "fast", "count": 3}, {"profile": "slow", "count": 1}]
    result = hierfl.run(parse_scenario(raw))
    downloads = of_kind(result, "cloud_download")
    nothing = of_kind(result, "edge_upload")
    assert downloads["node"].value_counts()["edge-1"] > nothing["node"].value_counts()["edge-1"]
    last = downloads[downloads["node"] == "edge-1"]["t_start"].max()
    assert last > result.rounds["sim_time_s"].iloc[len(result.rounds) // 2]


def test_edge_models_left_in_the_cloud_buffer_at_the_end_are_late():
    """cloud_buffer = 2 and a 4 s limit: edge-0's model arrives at 3.058 s and waits for a
    second one, which comes after the run ended: edge-0's model is late, at its arrival."""
    raw = two_edges({"cloud_trigger": "buffered", "cloud_buffer": 2})
    raw["run"]["max_sim_time_s"] = 4.0
    result = hierfl.run(parse_scenario(raw))
    late = of_kind(result, "late")
    late = late[late["node"].str.startswith("edge")]
    assert late["node"].tolist() == ["edge-0"]
    upload = of_kind(result, "edge_upload")
    assert late["t_start"].iloc[0] == upload[upload["node"] == "edge-0"]["t_end"].iloc[0]
    assert of_kind(result, "cloud_aggregate").empty
    assert result.rounds["edge_models_late"].tolist() == [1]
