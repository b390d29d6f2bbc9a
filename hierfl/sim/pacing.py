"""Round pacing: wait for a device to become eligible instead of spinning, a minimum interval
between cloud rounds, an end by simulated time, and evaluations at fixed simulated times."""

from __future__ import annotations

import math

import numpy as np

from hierfl.learn.trainer import evaluate
from hierfl.sim.cohort import settle, until
from hierfl.sim.device import Process, selectable
from hierfl.sim.engine import Simulation
from hierfl.sim.work import commit_all, next_free_s

CHARGE_STEP_S = 1e-3
"""The shortest wait for a charging battery: one that is empty (revived by any charge) or a
rounding error short of ``min_battery`` would otherwise wake the server at the same instant
again and again."""


def hopeful(sim: Simulation, devices: np.ndarray) -> np.ndarray:
    """Which of ``devices`` may ever be selected again: they hold the model, and their battery
    is alive and above ``min_battery``, or can charge; with ``require_plugged``, they can be
    plugged in."""
    selection = sim.scenario.selection
    charged = sim.battery.alive[devices]
    charged &= sim.battery.fractions(devices) >= selection.min_battery
    charged |= (sim.fleet.charge_w[devices] > 0) & sim.charging
    can_plug = not selection.require_plugged or sim.plugs
    return sim.fleet.fits[devices] & charged & can_plug


def next_chance_s(sim: Simulation, devices: np.ndarray) -> float:
    """The first instant after now at which one of ``devices`` may become eligible: an
    availability change, a plugged-in battery charging up to ``min_battery``, or a device at
    work done (inf: never)."""
    at_work_s = next_free_s(sim, devices)
    devices = devices[hopeful(sim, devices) & ~sim.busy[devices]]
    if not len(devices):
        return at_work_s
    now = sim.env.now
    state = sim.availability.at(devices, now)
    soonest = float(state.until_s.min())
    charging = devices[state.plugged & (sim.fleet.charge_w[devices] > 0)]
    if len(charging):
        battery = sim.battery
        short_j = sim.scenario.selection.min_battery * battery.capacity_j[charging]
        short_j = np.maximum(short_j - battery.remaining_j[charging], 0.0)
        charge_s = max(float((short_j / sim.fleet.charge_w[charging]).min()), CHARGE_STEP_S)
        soonest = min(soonest, now + charge_s)
    return min(soonest, at_work_s)


def wait_for_eligible(sim: Simulation, devices: np.ndarray, rounds: tuple[int, int]) -> Process:
    """Wait until one of ``devices`` is eligible, at most ``run.max_wait_s`` (and not past
    ``run.max_sim_time_s``), settling them at each wake-up (and committing work that is
    over, whose devices are free again). Returns whether one is."""
    run = sim.scenario.run
    give_up_s = sim.env.now + (run.max_wait_s or math.inf)
    if run.max_sim_time_s is not None:
        give_up_s = min(give_up_s, run.max_sim_time_s)
    while True:
        commit_all(sim)
        if selectable(sim, devices).any():
            return True
        wake_s = min(next_chance_s(sim, devices), give_up_s)
        if math.isinf(wake_s) or wake_s <= sim.env.now:
            return False
        yield from until(sim.env, wake_s)
        settle(sim, devices[~sim.busy[devices]], sim.env.now, rounds)


def round_may_start(sim: Simulation, cloud_round: int) -> Process:
    """Wait until cloud round ``cloud_round`` may start: ``round_interval_s`` after the last
    one started, and a device eligible (or ``max_wait_s`` passed). Returns False when the run
    is over instead: ``max_sim_time_s`` reached, or no device can ever be selected again.
    The run's first round always starts (with nobody to train, it closes at once): every
    run has a round to report."""
    everyone = np.arange(len(sim.topo.names))
    yield from until(sim.env, sim.round_started_s + sim.scenario.run.round_interval_s)
    first = not sim.round_rows
    if time_is_up(sim) and not first:
        return False
    ready = yield from wait_for_eligible(sim, everyone, (cloud_round, -1))
    over = time_is_up(sim) or math.isinf(next_chance_s(sim, everyone))
    return ready or first or not over


def time_is_up(sim: Simulation) -> bool:
    """Whether simulated time has reached ``run.max_sim_time_s``."""
    limit = sim.scenario.run.max_sim_time_s
    return limit is not None and sim.env.now >= limit


def evaluator(sim: Simulation) -> Process:
    """Evaluate the global model every ``run.eval_every_s`` simulated seconds (a process that
    never ends: run the environment until the cloud process ends)."""
    every_s = sim.scenario.run.eval_every_s
    done = sum(1 for row in sim.evaluations if row["trigger"] == "interval")
    while True:
        yield from until(sim.env, (done + 1) * every_s)
        done += 1
        record_evaluation(sim, "interval")


def record_evaluation(sim: Simulation, trigger: str) -> dict:
    """Evaluate the global model now (NaN in timing-only runs); keep the row."""
    accuracy = loss = float("nan")
    if sim.trainer is not None:
        data = sim.trainer.data
        accuracy, loss = evaluate(
            sim.model, sim.space, sim.global_weights, data.x_test, data.y_test
        )
    row = {
        "sim_time_s": float(sim.env.now),
        "cloud_rounds_done": len(sim.round_rows) + (trigger == "round"),
        "trigger": trigger,
        "accuracy": accuracy,
        "loss": loss,
    }
    sim.evaluations.append(row)
    return row
