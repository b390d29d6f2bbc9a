"""The buffered trigger (FedBuff): concurrency, buffers, staleness weights, late updates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings

import hierfl
from hierfl.errors import ScenarioError
from hierfl.learn.trainer import ParamSpace, epoch_orders
from hierfl.results import update_fates
from hierfl.scenario import parse_scenario
from hierfl.sim.cloud import cloud
from hierfl.sim.engine import STREAM_TRAINING, prepare
from tests.conftest import WEAK, small_raw
from tests.strategies import timing_scenarios

EXPONENT = 1.0  # an update s aggregations stale weighs 1 / (1 + s)
SPEEDS = {"fast": 400.0, "mid": 150.0, "slow": 60.0}  # MFLOP/s: arrivals never tie


def fleet_raw(mode: str = "cloud_only", **aggregation) -> dict:
    """Three boards of different speeds, learning on, FedBuff with concurrency 2, buffer 2."""
    return small_raw(
        run={"cloud_rounds": 4, "edge_rounds": 1, "learning": True},
        topology={"mode": mode, "edges": 1},
        profiles={name: {**WEAK, "compute_mflops": mflops, "battery_mah": 500.0, "voltage_v": 3.7}
                  for name, mflops in SPEEDS.items()},
        devices=[{"profile": name, "count": 1} for name in SPEEDS],
        aggregation={"trigger": "buffered", "concurrency": 2, "buffer": 2,
                     "staleness_exponent": EXPONENT, **aggregation},
    )


def of_kind(result, kind: str) -> pd.DataFrame:
    events = result.events
    return events[events["kind"] == kind].sort_values("t_start", kind="stable")


def plain_sgd(model, start, x, y, seed, run) -> torch.Tensor:
    """Local epochs of torch.optim.SGD on cross-entropy from ``start``, in the order the
    simulator's trainers draw for ``seed``."""
    space = ParamSpace.of(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(space.unflatten(start)[name])
    sgd = torch.optim.SGD(model.parameters(), lr=run.learning_rate)
    for order in epoch_orders(seed, len(y), run.local_epochs):
        for begin in range(0, len(order), run.batch_size):
            batch = torch.as_tensor(order[begin : begin + run.batch_size])
            sgd.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            sgd.step()
    return space.vector(model)


def fedbuff_reference(sim, events: pd.DataFrame, start: torch.Tensor) -> tuple[torch.Tensor, list]:
    """FedBuff by hand from the trace's timing: each job trains (plain torch) from the model
    the cloud had when its download began; updates join the buffer in arrival order with
    staleness = aggregations between hand-out and arrival; every 2 arrivals the model moves
    by the sum of (samples / total samples) * (1 + s)^-1 * delta."""
    data, run = sim.trainer.data, sim.scenario.run
    aggregations = of_kind_frame(events, "cloud_aggregate")["t_end"].to_numpy()
    downloads = of_kind_frame(events, "download")
    uploads = of_kind_frame(events, "upload")
    jobs = []
    for _, down in downloads.iterrows():
        up = uploads[(uploads["node"] == down["node"]) & (uploads["t_start"] > down["t_start"])]
        if not len(up):
            continue
        device = list(sim.topo.names).index(down["node"])
        handed_v = int((aggregations <= down["t_start"]).sum())
        jobs.append((float(up["t_end"].iloc[0]), device, handed_v,
                     (int(down["cloud_round"]), int(down["edge_round"]))))
    jobs.sort()
    models, staleness = [start], []
    for k in range(len(aggregations)):
        total, samples = torch.zeros_like(start, dtype=torch.float64), 0
        for arrive_s, device, handed_v, rounds in jobs[2 * k : 2 * k + 2]:
            rows = data.device_slice(device)
            seed = (sim.scenario.seed, STREAM_TRAINING, device, *rounds)
            base = models[handed_v]
            delta = plain_sgd(sim.model, base, data.x[rows], data.y[rows], seed, run) - base
            s = int((aggregations < arrive_s).sum()) - handed_v
            staleness.append(s)
            n = int(sim.fleet.samples[device])
            total += n * (1 + s) ** -EXPONENT * delta.double()
            samples += n
        models.append((models[-1].double() + total / samples).float())
    return models[-1], staleness


def of_kind_frame(events: pd.DataFrame, kind: str) -> pd.DataFrame:
    frame = events[events["kind"] == kind].sort_values("t_start", kind="stable")
    return frame.assign(node=frame["node"].astype(str))


def test_fedbuff_matches_a_plain_torch_reference():
    """The cloud's model after 4 buffered aggregations equals FedBuff computed by hand with
    plain torch SGD, and some updates were 1 aggregation stale (weighed 1/2)."""
    sim = prepare(parse_scenario(fleet_raw()))
    start = sim.global_weights.clone()
    sim.env.run(sim.env.process(cloud(sim)))
    events = sim.trace.to_frame()
    want, staleness = fedbuff_reference(sim, events, start)
    assert len(staleness) == 8 and 1 in staleness and 0 in staleness
    torch.testing.assert_close(sim.global_weights, want, atol=2e-5, rtol=0)


def test_concurrency_is_kept_and_every_update_is_aggregated_once():
    """Never more than 2 devices at work; after each aggregation the free places are handed
    out again; every arrival is aggregated once or counted late at the run's end."""
    result = hierfl.run(parse_scenario(fleet_raw(mode="hierarchical")))
    downloads, uploads = of_kind(result, "download"), of_kind(result, "upload")
    starts = np.sort(downloads["t_start"].to_numpy())
    ends = np.sort(uploads["t_end"].to_numpy())
    at_work = np.searchsorted(starts, starts, side="right") - np.searchsorted(ends, starts,
                                                                              side="right")
    assert at_work.max() == 2
    aggregations = of_kind(result, "edge_aggregate")
    assert len(aggregations) == 4
    used = int(result.rounds["updates_used"].sum())
    late = int(result.rounds["updates_late"].sum())
    assert used == 2 * 4 and used + late == len(uploads)
    assert int(result.devices["rounds_trained"].sum()) == used


def test_updates_staler_than_max_staleness_are_late():
    """With max_staleness 0, an update handed out before an aggregation and arriving after
    it is discarded: a late event, never aggregated, its energy wasted."""
    result = hierfl.run(parse_scenario(fleet_raw(max_staleness=0)))
    late = of_kind(result, "late")
    assert len(late) > 0
    assert (result.rounds["energy_wasted_j"].sum()) > 0
    assert int(result.devices["late_updates"].sum()) == len(late)
    fates = update_fates(result.events)
    assert int(fates["updates_late"].sum()) == len(late)


def test_timing_only_buffered_run_is_reproducible():
    """Same scenario and seed, identical events, with learning off."""
    raw = fleet_raw(mode="hierarchical")
    raw["run"]["learning"] = False
    first = hierfl.run(parse_scenario(raw)).events
    second = hierfl.run(parse_scenario(raw)).events
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.parametrize(
    ("sections", "shown"),
    [
        ({"model": {"name": "compact", "variants": [1.0, 0.5]}},
         "aggregation.trigger: 'buffered' is not simulated with model.variants"),
        ({"distillation": {"enabled": True}},
         "distillation.enabled: not with trigger = 'buffered' in cloud_only"),
    ],
)
def test_buffered_refuses_what_it_does_not_simulate(sections, shown):
    """Model families and FedDF in cloud_only: one line naming the key."""
    with pytest.raises(ScenarioError) as caught:
        parse_scenario({**fleet_raw(), **sections})
    assert shown in str(caught.value) and "\n" not in str(caught.value)


def job_end(work: pd.DataFrame, downloads: pd.DataFrame, job) -> float:
    """When the job whose download is ``job`` ended: its last phase before the device's next
    download."""
    later = downloads[(downloads["node"] == job.node) & (downloads["t_start"] > job.t_start)]
    until_s = later["t_start"].min() if len(later) else np.inf
    mine = work[(work["node"] == job.node) & (work["t_start"] >= job.t_start)
                & (work["t_start"] < until_s)]
    return float(mine["t_end"].max())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=timing_scenarios(buffered=True))
def test_buffered_runs_keep_their_rules(scenario):
    """On random fleets with batteries that empty and devices that go offline: no aggregator
    has more than ``concurrency`` devices at work; the k-th aggregation starts after k
    buffers of updates arrived; every late instant is the end of an upload that arrived;
    each aggregated update is counted once (updates_used = rounds_trained), and every late
    edge model in edge_models_late."""
    aggregation = scenario.aggregation
    result = hierfl.run(scenario)
    events = result.events.assign(node=result.events["node"].astype(str))
    device = events["node"].isin(set(result.devices["device"]))
    aggregator = events["edge"].astype(str) if scenario.topology.mode == "hierarchical" else None
    downloads = events[device & (events["kind"] == "download")]
    ends = events[device & events["kind"].isin(["download", "compute", "upload"])]
    arrived = events[device & (events["kind"] == "upload") & (events["bytes"] > 0)]
    kind = "edge_aggregate" if aggregator is not None else "cloud_aggregate"
    for name, group in (downloads.groupby(aggregator[downloads.index]) if aggregator is not None
                        else [("cloud", downloads)]):
        busy_until = np.array([job_end(ends, group, r) for r in group.itertuples()])
        starts = group["t_start"].to_numpy()
        at_work = [(starts <= t).sum() - (busy_until <= t).sum() for t in starts]
        assert max(at_work) <= aggregation.concurrency
        got = arrived[arrived["node"].isin(set(group["node"]))]["t_end"].to_numpy()
        node = name if aggregator is not None else "cloud"
        for k, start in enumerate(np.sort(
                events[(events["kind"] == kind) & (events["node"] == node)]["t_start"]), 1):
            assert (got <= start).sum() >= k * aggregation.buffer
    late = events[device & (events["kind"] == "late")]
    up_ends = set(zip(arrived["node"], arrived["t_end"], strict=True))
    assert all((r.node, r.t_start) in up_ends for r in late.itertuples())
    assert int(result.rounds["updates_used"].sum()) == int(result.devices["rounds_trained"].sum())
    edge_late = events[~device & (events["kind"] == "late")]
    assert int(result.rounds["edge_models_late"].sum()) == len(edge_late)


def test_devices_that_cannot_hold_the_model_are_skipped_once_per_round():
    """A board without the memory for the model gets one skip per (cloud, edge) round, not
    one per hand-out."""
    raw = fleet_raw(mode="hierarchical")
    raw["run"].update(learning=False, edge_rounds=2)
    raw["profiles"]["tiny"] = {**WEAK, "memory_kb": 2}
    raw["devices"].append({"profile": "tiny", "count": 1})
    result = hierfl.run(parse_scenario(raw))
    skips = of_kind(result, "skip")
    assert len(skips) == 4 * 2
    assert not skips.duplicated(["cloud_round", "edge_round"]).any()


def test_policy_all_spreads_work_over_the_fleet():
    """With policy 'all' and more candidates than free places, every board gets work over a
    run (a uniform draw, not always the first ones)."""
    raw = fleet_raw(mode="hierarchical", concurrency=2, buffer=1)
    raw["run"].update(learning=False, cloud_rounds=20)
    raw["devices"] = [{"profile": "fast", "count": 6}]
    result = hierfl.run(parse_scenario(raw))
    assert set(of_kind(result, "download")["node"].astype(str)) == {f"fast-{i}" for i in range(6)}


def test_jobs_pending_at_an_aggregation_train_together():
    """The batched trainer stays: the first aggregation (a buffer of two) trains every job
    handed out so far in one batch: the three first, and the one handed out when the first
    update arrived."""
    raw = fleet_raw(mode="hierarchical", concurrency=3, buffer=2)
    raw["devices"].append({"profile": "fast", "count": 1})
    sim = prepare(parse_scenario(raw))
    batches = []
    take = sim.trainer.take_pending

    def spy():
        jobs = take()
        batches.append(len(jobs))
        return jobs

    sim.trainer.take_pending = spy
    sim.env.run(sim.env.process(cloud(sim)))
    assert type(sim.trainer).__name__ == "BatchedTrainer"
    assert batches[0] == 4


def test_buffered_with_charging_boards_ends():
    """Plugged-in boards whose tiny batteries empty and charge again: the edge waits for a
    charge that takes a moment (CHARGE_STEP_S at least), instead of waking at the same
    instant forever; the run plays its rounds."""
    board = {**WEAK, "voltage_v": 3.7, "compute_mflops": 100.0, "battery_mah": 0.3,
             "charge_w": 2.0, "mean_online_s": 6.0, "mean_offline_s": 3.0}
    raw = small_raw(seed=1, aggregation={"trigger": "buffered", "concurrency": 1, "buffer": 1},
                    availability={"model": "markov", "plugged_probability": 0.5},
                    run={"cloud_rounds": 40, "edge_rounds": 1},
                    profiles={"board": board}, devices=[{"profile": "board", "count": 2}])
    result = hierfl.run(parse_scenario(raw))
    assert len(result.rounds) == 40
    assert (result.events["kind"] == "charge").any()


def test_a_buffered_run_writes_no_checkpoint(tmp_path):
    """Its buffers' versions and hand-out counts are not in a checkpoint: none is written."""
    from hierfl.sim.runner import simulate

    raw = fleet_raw(mode="hierarchical")
    raw["run"]["learning"] = False
    simulate(parse_scenario(raw), checkpoint_dir=tmp_path)
    assert not (tmp_path / "checkpoint.pt").exists()
