"""Run a Scenario end to end: prepare, let SimPy play the cloud process, tabulate the trace."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from hierfl.checkpoint import checkpoint_scenario, load_checkpoint, restore, save_checkpoint
from hierfl.compression import DENSE, UpdateCodec
from hierfl.learn.trainer import evaluate, per_sample
from hierfl.policies import Selection
from hierfl.results import (
    EVALUATION_COLUMNS,
    Result,
    rounds_table,
    scenario_as_run,
    to_target,
    versions,
)
from hierfl.scenario import Scenario
from hierfl.sim.battery import CATEGORIES
from hierfl.sim.cloud import cloud
from hierfl.sim.engine import Simulation, prepare, tier_column
from hierfl.sim.pacing import evaluator
from hierfl.topology import CLOUD, string_index


def simulate(
    scenario: Scenario,
    on_round: Callable[[dict], None] | None = None,
    selection: Selection | None = None,
    codec: UpdateCodec | None = None,
    checkpoint_dir: str | Path | None = None,
) -> Result:
    """Simulate ``scenario`` and return its Result (same scenario and seed, same events).

    ``on_round`` is called with each cloud round's figures as soon as the round closes;
    ``selection`` and ``codec`` replace the scenario's policy and codec with your own;
    with ``checkpoint_dir``, a checkpoint is written there after every cloud round.
    """
    sim = prepare(scenario, selection, codec)
    return _play(sim, on_round, checkpoint_dir)


def resume(
    run_dir: str | Path,
    on_round: Callable[[dict], None] | None = None,
    selection: Selection | None = None,
    codec: UpdateCodec | None = None,
    state: dict | None = None,
) -> Result:
    """Continue the run whose checkpoint is in ``run_dir``; equals the uninterrupted run.

    ``state`` is that checkpoint when the caller has already read it.
    """
    state = state if state is not None else load_checkpoint(Path(run_dir))
    sim = prepare(checkpoint_scenario(state), selection, codec)
    restore(sim, state)
    return _play(sim, on_round, run_dir)


def _play(
    sim: Simulation, on_round: Callable[[dict], None] | None, checkpoint_dir: str | Path | None
) -> Result:
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)

    def after_round(row: dict) -> None:
        if folder is not None and nothing_in_flight(sim):
            save_checkpoint(sim, folder, row["cloud_round"] + 1)
        if on_round is not None:
            on_round(row)

    sim.on_round = after_round
    rounds = sim.env.process(cloud(sim))
    if sim.scenario.run.eval_every_s is not None and sim.learning:
        sim.env.process(evaluator(sim))
    sim.env.run(until=rounds)
    record_idle(sim)
    events = sim.trace.to_frame()
    rounds = rounds_table(sim.round_rows, events, sim.scenario.topology.mode == "cloud_only")
    devices = devices_table(sim)
    model = None if sim.global_weights is None else sim.space.unflatten(sim.global_weights)
    summary = summarize(sim, rounds, devices, events)
    links = sim.link_log.table(float(sim.env.now))
    evaluations = None
    if sim.scenario.run.eval_every_s is not None and sim.learning:
        evaluations = pd.DataFrame(sim.evaluations, columns=EVALUATION_COLUMNS)
    return Result(events, rounds, devices, summary, model, links, sim.link_log.load_table(),
                  evaluations)


def record_idle(sim: Simulation) -> None:
    """Edges and the cloud draw their idle power the whole run: one ``idle`` event each."""
    topology, now_s = sim.scenario.topology, float(sim.env.now)
    edges = sim.edge_node(0) + np.arange(len(sim.topo.edges))
    nodes = np.r_[0, edges]
    idle_w = np.r_[sim.scenario.profile(topology.cloud_profile).power_idle_w,
                   np.full(len(edges), sim.scenario.profile(topology.edge_profile).power_idle_w)]
    sim.trace.extend("idle", nodes, np.r_[-1, edges], 0.0, now_s, -1, -1, 0, idle_w * now_s)


def nothing_in_flight(sim: Simulation) -> bool:
    """Whether no work is out and no update waits in a buffer: the only states a checkpoint
    holds (a deadline's stragglers, or FedBuff's devices at work, are not saved). A cloud
    that does not wait for every edge may have edges at work at any time: never."""
    aggregation = sim.scenario.aggregation
    if aggregation.cloud_trigger != "all" or aggregation.trigger == "buffered":
        return False  # the buffers' versions and hand-out counts are not saved
    return not any(work.open for work in sim.works.values()) and not any(
        buffer.pending for buffer in sim.buffers.values())


def devices_table(sim: Simulation) -> pd.DataFrame:
    """One row per device: energy by phase, battery left, rounds trained, dropout, accuracy.

    The table takes the simulation's arrays as its columns, uncopied: the run is over, and
    on a million devices copying them costs more than all else here.
    """
    topo, battery = sim.topo, sim.battery
    columns = {
        "device": topo.names,
        "profile": topo.profile_names.take(topo.profile_of),
        "edge": string_index([CLOUD, *topo.edges]).take(topo.edge_of + 1),
        "samples": sim.fleet.samples,
        "energy_j": battery.used_j.sum(axis=1),
        "battery": battery.fractions(),
        "rounds_trained": sim.trained,
        "late_updates": sim.late,
        "dropped": ~battery.alive,
        "dropped_at_s": battery.died_s,
        "charged_j": battery.charged_j,
        "online_s": sim.availability.online_s(np.arange(len(topo.names)), float(sim.env.now)),
        **{f"energy_{category}_j": battery.used_j[:, k] for k, category in enumerate(CATEGORIES)},
        "accuracy": local_accuracy(sim),
    }
    if sim.family is not None:
        widths = np.array([*sim.family.widths, np.nan])
        columns["width"] = widths[sim.variant_of]  # -1 (no variant fits) reads the NaN
    return pd.DataFrame(columns, copy=False)


def local_accuracy(sim: Simulation) -> np.ndarray:
    """The final global model's accuracy on each device's own data (NaN without learning).

    With a model family, each device's own variant (its slice of the global model) is
    scored; a device that fits no variant gets NaN.
    """
    if sim.trainer is None:
        return np.full(len(sim.topo.names), np.nan)
    if sim.family is None:
        return _per_device(sim, sim.model, sim.space, sim.global_weights)
    accuracy = np.full(len(sim.topo.names), np.nan)
    for k, variant in enumerate(sim.family.variants):
        mine = sim.variant_of == k
        if mine.any():
            weights = sim.global_weights[variant.index]
            accuracy[mine] = _per_device(sim, variant.model, variant.space, weights)[mine]
    return accuracy


def _per_device(sim: Simulation, model, space, weights) -> np.ndarray:
    """Accuracy of ``weights`` on each device's own samples."""
    data = sim.trainer.data
    hits, _ = per_sample(model, space, weights, sim.trainer.x, sim.trainer.y)
    correct = np.add.reduceat(hits.numpy().astype(np.int64), data.offsets[:-1])
    return correct / np.diff(data.offsets)


def tiers(sim: Simulation, devices: pd.DataFrame, rounds: pd.DataFrame) -> list[dict]:
    """One record per variant of the family: its devices and profiles, its costs, its
    sub-model's accuracy on the global test set and on its devices' pooled samples, and
    when that sub-model first reached the target accuracy."""
    records = []
    data = None if sim.trainer is None else sim.trainer.data
    for k, variant in enumerate(sim.family.variants):
        mine = sim.variant_of == k
        test_accuracy = local = float("nan")
        if data is not None:
            weights = sim.global_weights[variant.index]
            test_accuracy = evaluate(variant.model, variant.space, weights, data.x_test,
                                     data.y_test)[0]
            samples = devices["samples"].to_numpy()[mine]
            if samples.sum():
                local = float((devices["accuracy"].to_numpy()[mine] * samples).sum()
                              / samples.sum())
        profiles = devices.loc[mine, "profile"].astype(str).value_counts().sort_index()
        records.append({
            "width": variant.width,
            "devices": int(mine.sum()),
            "profiles": {name: int(n) for name, n in profiles.items()},
            "n_params": variant.stats.n_params,
            "forward_flops": variant.stats.forward_flops,
            "train_bytes": variant.train_bytes(sim.scenario.run.batch_size),
            "uplink_payload_bytes": sim.codec.payload_bytes(variant.space.specs),
            "downlink_payload_bytes": DENSE.payload_bytes(variant.space.specs),
            "test_accuracy": test_accuracy,
            "local_accuracy": local,
            "rounds_trained": float(devices.loc[mine, "rounds_trained"].mean())
            if mine.any() else 0.0,
            "energy_j": float(devices.loc[mine, "energy_j"].mean()) if mine.any() else 0.0,
            **_tier_target(rounds, variant.width, sim.scenario.run.target_accuracy),
        })
    return records


def _tier_target(rounds: pd.DataFrame, width: float, target: float | None) -> dict:
    """``to_target`` on the variant's own accuracy column (rounds.csv ``accuracy_w<width>``)."""
    column = tier_column(width)
    if column not in rounds:
        return to_target(rounds.iloc[:0], None)
    return to_target(rounds.drop(columns="accuracy").rename(columns={column: "accuracy"}), target)


def summarize(
    sim: Simulation, rounds: pd.DataFrame, devices: pd.DataFrame, events: pd.DataFrame
) -> dict:
    """The summary.json content: scenario, versions, final figures, time/energy to target."""
    scenario = sim.scenario
    node = events["node"].cat.codes  # the trace's numbering: cloud, edges, then devices
    infrastructure = (node >= 0) & (node < sim.device_node(0))
    topo = sim.topo  # grouped by its profile codes: no million names to hash
    profile = pd.Categorical.from_codes(topo.profile_of, categories=topo.profile_names)
    per_profile = devices.groupby(pd.Series(profile, name="profile"), observed=True).agg(
        devices=("device", "size"),
        accuracy=("accuracy", "mean"),
        energy_j=("energy_j", "mean"),
        battery=("battery", "mean"),
        rounds_trained=("rounds_trained", "mean"),
        dropped=("dropped", "sum"),
        **({} if sim.family is None else {"width": ("width", "mean")}),
    )
    last = rounds.iloc[-1]
    return {
        "name": scenario.name,
        "seed": scenario.seed,
        "scenario": scenario_as_run(scenario, sim.codec, sim.data),
        "versions": versions(),
        "model": {
            "name": scenario.model.name,
            "n_params": sim.stats.n_params,
            "forward_flops": sim.stats.forward_flops,
            "activations_per_sample": sim.stats.activations_per_sample,
            "uplink_payload_bytes": sim.codec.payload_bytes(sim.space.specs),
            "downlink_payload_bytes": sim.downlink_bytes,
        },
        "final_accuracy": float(last["accuracy"]),
        "final_loss": float(last["loss"]),
        "sim_time_s": float(sim.env.now),
        "energy_j": float(devices["energy_j"].sum()),
        "infrastructure_energy_j": float(events.loc[infrastructure, "energy_j"].sum()),
        "bytes_up": int(rounds["bytes_up"].sum()),
        "devices_dropped": int(devices["dropped"].sum()),
        "events": len(events),
        "target_accuracy": scenario.run.target_accuracy,
        **to_target(rounds, scenario.run.target_accuracy),
        "per_profile": per_profile.reset_index().to_dict(orient="records"),
        **({} if sim.family is None else {"tiers": tiers(sim, devices, rounds)}),
    }
