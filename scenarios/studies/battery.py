"""Study: how long battery-limited microcontrollers keep learning under each selection policy.

Runs ``scenarios/battery.toml`` (20 ESP32-class boards with a 2 mAh budget, 0.05 W idle drain,
no battery reserve, non-IID data) with the selection policies ``all`` (every living board every
round), ``random`` (a random half) and ``battery`` (the half with the most charge left, the
seed tutorial's policy). For each it measures the rounds survived (the last cloud round that
aggregated at least one update), the updates aggregated and lost, when boards ran empty, the
share of energy spent idle, and the accuracy reached. It writes ``battery.png`` and
``battery.csv`` into the output folder and prints the table.

    python scenarios/studies/battery.py [OUT_DIR] [--rounds N] [--seed S]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import hierfl
from hierfl.results import Result, atomic_write
from hierfl.study import save_study_figure, study_cli, study_figure, study_scenario

NAME = "battery"
SCENARIO = Path(__file__).resolve().parents[1] / f"{NAME}.toml"
POLICIES = [  # (policy, label)
    ("all", "all: every living board"),
    ("random", "random: a random half"),
    ("battery", "battery: the fullest half (seed)"),
]
COLOURS = ["#000000", "#E69F00", "#0072B2"]  # Okabe-Ito


def main(
    out_dir: str | Path = f"runs/studies/{NAME}", rounds: int | None = None, seed: int | None = None
) -> pd.DataFrame:
    """Run every policy, write the figure and the CSV table; return the table.

    ``rounds`` overrides ``run.cloud_rounds`` and ``seed`` the scenario's seed. Times are
    simulated seconds, energy joules.
    """
    out, base = study_scenario(SCENARIO, out_dir, rounds, seed)
    results = [
        hierfl.run(base.with_overrides([f"selection.policy={policy}"])) for policy, _ in POLICIES
    ]
    table = pd.DataFrame(
        [_row(policy, result) for (policy, _), result in zip(POLICIES, results, strict=True)]
    )
    atomic_write(out / f"{NAME}.csv", lambda p: table.to_csv(p, index=False))
    _plot(results, base.run.target_accuracy, out / f"{NAME}.png")
    return table


def alive_after_round(result: Result) -> np.ndarray:
    """Devices with charge left at the end of each cloud round (dropouts counted by round)."""
    events = result.events
    drops = events.loc[events["kind"].astype(str) == "dropout", "cloud_round"].to_numpy(int)
    per_round = np.bincount(drops, minlength=len(result.rounds))[: len(result.rounds)]
    return len(result.devices) - np.cumsum(per_round)


def _row(policy: str, result: Result) -> dict:
    """One policy's figures: survival, dropouts, energy split and accuracy."""
    rounds, devices, summary = result.rounds, result.devices, result.summary
    active = rounds[rounds["devices_trained"] > 0]
    events = result.events
    lost = events[events["kind"].astype(str) == "dropout"].sort_values("t_start")
    half = len(devices) // 2
    accuracy = rounds["accuracy"].astype(float)
    return {
        "policy": policy,
        "rounds_survived": int(active["cloud_round"].max()) + 1 if len(active) else 0,
        "time_survived_s": float(active["sim_time_s"].max()) if len(active) else 0.0,
        "updates_aggregated": int(rounds["devices_trained"].sum()),
        "updates_lost": lost_updates(events),
        "devices_dropped": int(devices["dropped"].sum()),
        "first_dropout_round": _round_of(lost, 0),
        "first_dropout_s": _time_of(lost, 0),
        "half_dropped_round": _round_of(lost, half - 1),
        "last_dropout_round": _round_of(lost, len(lost) - 1),
        "last_dropout_s": _time_of(lost, len(lost) - 1),
        "idle_energy_share": float(devices["energy_idle_j"].sum() / devices["energy_j"].sum()),
        "rounds_to_target": summary.get("rounds_to_target"),
        "time_to_target_s": summary.get("time_to_target_s"),
        "max_accuracy": float(accuracy.max()),
        "final_accuracy": float(accuracy.iloc[-1]),
    }


def lost_updates(events: pd.DataFrame) -> int:
    """Device rounds that began (a download) but delivered no upload: the battery ran out.

    A phase cut short by an empty battery is recorded with 0 bytes, so a delivered update is
    an upload event with bytes > 0.
    """
    kinds = events["kind"].astype(str)
    key = ["node", "cloud_round", "edge_round"]
    began = events.loc[kinds == "download", key].drop_duplicates()
    delivered = events.loc[(kinds == "upload") & (events["bytes"] > 0), key].drop_duplicates()
    return len(began) - len(began.merge(delivered, on=key))


def _round_of(drops: pd.DataFrame, k: int) -> int | None:
    """The cloud round (1-based) of the k-th dropout, or None if there were not that many."""
    return int(drops["cloud_round"].iloc[k]) + 1 if 0 <= k < len(drops) else None


def _time_of(drops: pd.DataFrame, k: int) -> float | None:
    return float(drops["t_start"].iloc[k]) if 0 <= k < len(drops) else None


def _plot(results: list[Result], target: float | None, path: Path) -> None:
    """Boards alive, updates aggregated and accuracy, each against cloud rounds."""
    fig = study_figure(14, 4.6)
    alive_ax, trained_ax, accuracy_ax = fig.subplots(1, 3, sharex=True)
    last = 1
    for colour, result, (_, label) in zip(COLOURS, results, POLICIES, strict=True):
        rounds = result.rounds
        x = rounds["cloud_round"].to_numpy() + 1
        alive_ax.step(x, alive_after_round(result), where="post", color=colour, lw=1.5, label=label)
        # random and battery both aggregate 10 per round until boards die: draw random wider
        wide = 2.6 if label.startswith("random") else 1.0
        trained_ax.plot(x, rounds["devices_trained"], color=colour, lw=wide, alpha=0.85)
        accuracy_ax.plot(x, 100 * rounds["accuracy"], color=colour, lw=1.4)
        active = rounds.loc[rounds["devices_trained"] > 0, "cloud_round"]
        if len(active):
            last = max(last, int(active.max()) + 1)
            for ax in (trained_ax, accuracy_ax):
                ax.axvline(int(active.max()) + 1, color=colour, ls=":", lw=1)
    n_devices = len(results[0].devices)
    alive_ax.set_ylabel("boards with charge left")
    alive_ax.set_ylim(0, n_devices + 1)
    alive_ax.set_title("boards alive (battery not empty)", fontsize=10)
    trained_ax.set_ylabel("updates aggregated in the round")
    trained_ax.set_ylim(0, n_devices + 1)
    trained_ax.set_title("participation (dotted: last round with an update)", fontsize=10)
    accuracy_ax.set_ylabel("test accuracy (%)")
    accuracy_ax.set_ylim(0, 100)
    accuracy_ax.set_title("accuracy of the global model", fontsize=10)
    handles, labels = alive_ax.get_legend_handles_labels()
    if target is not None:
        line = accuracy_ax.axhline(100 * target, color="#999999", ls="--", lw=1)
        handles.append(line)
        labels.append(f"target accuracy ({100 * target:.0f}%)")
    for ax in (alive_ax, trained_ax):
        ax.yaxis.get_major_locator().set_params(integer=True)
    for ax in (alive_ax, trained_ax, accuracy_ax):
        ax.set_xlabel("cloud round")
        ax.set_xlim(0, min(len(results[0].rounds), int(last * 1.1) + 1))
        ax.grid(color="#DDDDDD", lw=0.5)
    fig.legend(
        handles, labels, loc="outside lower center", ncol=len(labels), fontsize=9, frameon=False
    )
    fig.suptitle(
        f"Selection policies on {n_devices} battery-limited microcontrollers "
        "(2 mAh, 0.05 W idle, no reserve, non-IID data)",
        fontsize=11,
    )
    save_study_figure(fig, path)


def cli(argv: list[str] | None = None) -> None:
    """Parse OUT_DIR, --rounds and --seed, run the study, print its table."""
    study_cli(NAME, __doc__, main, "cloud rounds per policy (default: the scenario's 400)", argv)


if __name__ == "__main__":
    cli()
