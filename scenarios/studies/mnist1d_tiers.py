"""Study: MNIST-1D on a mixed fleet, two-tier against cloud-only FedAvg, iid and Dirichlet(0.3).

Runs ``scenarios/mnist1d_tiers.toml`` (two-tier: 4 edge aggregations per cloud round) and
cloud-only FedAvg with the same number of aggregations (cloud rounds x 4, one edge round each),
each with iid and Dirichlet(0.3) label partitions, over 3 seeds (same devices and data per seed
on both sides). It writes ``mnist1d_tiers.csv`` (one row per variant and seed),
``mnist1d_tiers_summary.csv`` (mean and spread over the seeds) and ``mnist1d_tiers.png``
(accuracy against simulated time). (Not named ``mnist1d.py``: run as a script, this file would
then shadow the ``mnist1d`` package.)

    python scenarios/studies/mnist1d_tiers.py [OUT_DIR] [--rounds N] [--seed S]
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import hierfl
from hierfl.results import Result, atomic_write
from hierfl.study import (
    accuracy_axes,
    fleet_counts,
    save_study_figure,
    study_cli,
    study_figure,
    study_scenario,
)

NAME = "mnist1d_tiers"
SCENARIO = Path(__file__).resolve().parents[1] / f"{NAME}.toml"
SEEDS = (42, 43, 44)
VARIANTS = [  # (label, topology.mode, data.partition)
    ("two-tier, iid", "hierarchical", "iid"),
    ("cloud-only, iid", "cloud_only", "iid"),
    ("two-tier, dirichlet 0.3", "hierarchical", "dirichlet"),
    ("cloud-only, dirichlet 0.3", "cloud_only", "dirichlet"),
]
COLOURS = ["#0072B2", "#D55E00", "#56B4E9", "#E69F00"]  # Okabe-Ito


def main(
    out_dir: str | Path = f"runs/studies/{NAME}", rounds: int | None = None, seed: int | None = None
) -> pd.DataFrame:
    """Run every variant and seed, write the figure and both tables; return the per-run table.

    ``rounds`` overrides the two-tier side's ``run.cloud_rounds`` (cloud-only runs
    ``edge_rounds`` times as many); ``seed`` runs that seed alone instead of 42, 43, 44.
    """
    out, base = study_scenario(SCENARIO, out_dir, rounds)
    seeds = SEEDS if seed is None else (seed,)
    rows, curves = [], []
    for (label, mode, partition), colour in zip(VARIANTS, COLOURS, strict=True):
        for s in seeds:
            result = hierfl.run(variant(base, mode, partition, s))
            rows.append(_row(label, s, result))
            curves.append((label, colour, result))
    table = pd.DataFrame(rows)
    summary = _summary(table)
    atomic_write(out / f"{NAME}.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(out / f"{NAME}_summary.csv", lambda p: summary.to_csv(p, index=False))
    _plot(curves, base, out / f"{NAME}.png")
    return table


def variant(base: hierfl.Scenario, mode: str, partition: str, seed: int) -> hierfl.Scenario:
    """The scenario of one side: cloud-only aggregates once per cloud round, as often in all."""
    run = base.run
    rounds = run.cloud_rounds if mode == "hierarchical" else run.cloud_rounds * run.edge_rounds
    edge_rounds = run.edge_rounds if mode == "hierarchical" else 1
    return base.with_overrides(
        [
            f"seed={seed}",
            f"topology.mode={mode}",
            f"data.partition={partition}",
            f"run.cloud_rounds={rounds}",
            f"run.edge_rounds={edge_rounds}",
        ]
    )


def _row(label: str, seed: int, result: Result) -> dict:
    rounds, summary = result.rounds, result.summary
    return {
        "variant": label,
        "seed": seed,
        "aggregations": int(summary["scenario"]["run"]["cloud_rounds"])
        * int(summary["scenario"]["run"]["edge_rounds"]),
        "final_accuracy": float(rounds["accuracy"].iloc[-1]),
        "max_accuracy": float(rounds["accuracy"].max()),
        "sim_time_s": float(rounds["sim_time_s"].iloc[-1]),
        "time_to_target_s": summary.get("time_to_target_s"),
        "energy_j": float(rounds["energy_j"].sum()),
        "bytes_up": int(rounds["bytes_up"].sum()),
    }


def _summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, and min and max, over the seeds, per variant (in the study's order)."""
    grouped = table.groupby("variant", sort=False)
    return pd.DataFrame(
        {
            "seeds": grouped.size(),
            "final_accuracy_mean": grouped["final_accuracy"].mean(),
            "final_accuracy_min": grouped["final_accuracy"].min(),
            "final_accuracy_max": grouped["final_accuracy"].max(),
            "sim_time_s_mean": grouped["sim_time_s"].mean(),
            "time_to_target_s_mean": grouped["time_to_target_s"].mean(),
            "targets_reached": grouped["time_to_target_s"].count(),
            "energy_j_mean": grouped["energy_j"].mean(),
        }
    ).reset_index()


def _plot(curves: list[tuple[str, str, Result]], base: hierfl.Scenario, path: Path) -> None:
    """Accuracy against simulated time, one line per run, one colour per variant."""
    fig = study_figure(8, 4.8)
    ax = fig.subplots()
    seen = set()
    for label, colour, result in curves:
        rounds = result.rounds
        ax.plot(
            rounds["sim_time_s"],
            100 * rounds["accuracy"],
            color=colour,
            lw=1.2,
            alpha=0.85,
            label=None if label in seen else label,
        )
        seen.add(label)
    accuracy_axes(ax, "simulated time (s)", base.run.target_accuracy)
    ax.set_xlim(left=0)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    counts = fleet_counts(base)
    ax.set_title(
        f"MNIST-1D, compact MLP, {counts}, {base.topology.edges} edges: one line per seed",
        fontsize=10,
    )
    save_study_figure(fig, path)


def cli(argv: list[str] | None = None) -> None:
    """Parse OUT_DIR, --rounds and --seed, run the study, print its tables."""
    study_cli(
        NAME,
        __doc__,
        main,
        "two-tier cloud rounds (default: the scenario's 10)",
        argv,
        extra_tables=[f"{NAME}_summary.csv"],
    )


if __name__ == "__main__":
    cli()
