"""Study: deadline vs wait-all vs first-k edge aggregation on a mixed fleet with stragglers.

Runs ``scenarios/protocol.toml`` (10 mcu, 10 soc and 10 mobile devices under two edges with a
shared cell each, lognormal compute and bandwidth variability, non-IID data) with the edge
triggers ``all`` (wait for every selected device), ``deadline`` (aggregate what arrived 2 s
after the round started) and ``first_k`` (select ceil(1.3 * 8) = 11 of an edge's 15
devices, aggregate the first 8), over three seeds. For each run it measures the simulated
time and device energy to the target accuracy, the energy of discarded work
(``energy_wasted_j``), the updates used and late, and the final accuracy. It writes
``protocol.png`` and ``protocol.csv`` into the output folder and prints the table.

    python scenarios/studies/protocol.py [OUT_DIR] [--rounds N] [--seed S]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import hierfl
from hierfl.results import Result, atomic_write
from hierfl.study import accuracy_axes, save_study_figure, study_cli, study_figure

NAME = "protocol"
SCENARIO = Path(__file__).resolve().parents[1] / f"{NAME}.toml"
SEEDS = (0, 1, 2)
TRIGGERS = [  # (label, overrides)
    ("all", []),
    ("deadline 2 s", ["aggregation.trigger=deadline", "aggregation.deadline_s=2.0"]),
    ("first_k 8 of 11", ["aggregation.trigger=first_k", "aggregation.k=8"]),
]
COLOURS = ["#000000", "#0072B2", "#D55E00"]  # Okabe-Ito


def main(
    out_dir: str | Path = f"runs/studies/{NAME}", rounds: int | None = None, seed: int | None = None
) -> pd.DataFrame:
    """Run every trigger on every seed, write the figure and the CSV table; return the table.

    ``rounds`` overrides ``run.cloud_rounds``; ``seed`` runs that seed only. Times are
    simulated seconds, energy joules.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = hierfl.load_scenario(SCENARIO)
    if rounds is not None:
        base = base.with_overrides([f"run.cloud_rounds={rounds}"])
    seeds = SEEDS if seed is None else (seed,)
    runs = {(label, s): hierfl.run(base.with_overrides([*overrides, f"seed={s}"]))
            for label, overrides in TRIGGERS for s in seeds}
    table = pd.DataFrame([_row(label, s, result) for (label, s), result in runs.items()])
    atomic_write(out / f"{NAME}.csv", lambda p: table.to_csv(p, index=False))
    _plot(runs, table, seeds[0], base.run.target_accuracy, out / f"{NAME}.png")
    return table


def _row(trigger: str, seed: int, result: Result) -> dict:
    """One run's figures: time and energy to target, wasted energy, updates, accuracy."""
    rounds, summary = result.rounds, result.summary
    wasted = float(rounds["energy_wasted_j"].sum())
    return {
        "trigger": trigger,
        "seed": seed,
        "time_to_target_s": summary.get("time_to_target_s"),
        "energy_to_target_j": summary.get("energy_to_target_j"),
        "rounds_to_target": summary.get("rounds_to_target"),
        "sim_time_s": float(rounds["sim_time_s"].iloc[-1]),
        "energy_j": float(summary["energy_j"]),
        "energy_wasted_j": wasted,
        "wasted_share": wasted / float(summary["energy_j"]),
        "updates_used": int(rounds["updates_used"].sum()),
        "updates_late": int(rounds["updates_late"].sum()),
        "final_accuracy": float(rounds["accuracy"].iloc[-1]),
    }


def spread(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Median, min and max of ``column`` over seeds, per trigger (in TRIGGERS order)."""
    grouped = table.groupby("trigger", sort=False)[column]
    return pd.DataFrame({"median": grouped.median(), "min": grouped.min(), "max": grouped.max()})


def _plot(runs: dict, table: pd.DataFrame, seed: int, target: float | None, path: Path) -> None:
    """Accuracy vs simulated time (one seed); time to target; energy to target and wasted."""
    fig = study_figure(14, 4.6)
    accuracy_ax, time_ax, energy_ax = fig.subplots(1, 3)
    for colour, (label, _) in zip(COLOURS, TRIGGERS, strict=True):
        rounds = runs[(label, seed)].rounds
        accuracy_ax.plot(rounds["sim_time_s"], 100 * rounds["accuracy"], color=colour, lw=1.4,
                         marker=".", ms=3, label=label)
    accuracy_axes(accuracy_ax, "simulated time (s)", target)
    accuracy_ax.set_title(f"accuracy of the global model (seed {seed})", fontsize=10)
    accuracy_ax.legend(fontsize=8, frameon=False)
    x = np.arange(len(TRIGGERS))
    labels = [label for label, _ in TRIGGERS]
    _bars(time_ax, x, spread(table, "time_to_target_s"), COLOURS, 0.6)
    time_ax.set_title("simulated time to target (s), median and min-max", fontsize=10)
    to_target = spread(table, "energy_to_target_j")
    wasted = spread(table, "energy_wasted_j")
    _bars(energy_ax, x - 0.2, to_target, ["#999999"] * len(x), 0.4, "energy to target")
    _bars(energy_ax, x + 0.2, wasted, ["#E69F00"] * len(x), 0.4, "wasted over the run")
    energy_ax.set_title("device energy (J), median and min-max", fontsize=10)
    energy_ax.legend(fontsize=8, frameon=False)
    for ax in (time_ax, energy_ax):
        ax.set_xticks(x, labels, fontsize=9)
        ax.set_ylim(0, None)
        ax.grid(axis="y", color="#DDDDDD", lw=0.5)
    fig.suptitle(f"Edge triggers on a mixed fleet (mcu, soc, mobile; variability on), "
                 f"{len(table['seed'].unique())} seeds", fontsize=11)
    save_study_figure(fig, path)


def _bars(ax, x, stats: pd.DataFrame, colours, width: float, label: str | None = None) -> None:
    """Median bars with min-max whiskers; a trigger that never reached the target is empty."""
    median = stats["median"].astype(float).to_numpy()
    low = median - stats["min"].astype(float).to_numpy()
    high = stats["max"].astype(float).to_numpy() - median
    ax.bar(x, np.nan_to_num(median), width, color=colours, label=label)
    ax.errorbar(x, median, yerr=[low, high], fmt="none", ecolor="black", lw=1, capsize=3)


def cli(argv: list[str] | None = None) -> None:
    """Parse OUT_DIR, --rounds and --seed, run the study, print its table."""
    study_cli(NAME, __doc__, main, "cloud rounds per run (default: the scenario's 30)", argv)


if __name__ == "__main__":
    cli()
