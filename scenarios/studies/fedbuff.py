"""Study: synchronous vs buffered asynchronous (FedBuff) aggregation at the edges, at equal
simulated time, on a mixed fleet of the realistic profiles.

Runs ``scenarios/fedbuff.toml`` (12 phone_lte, 12 esp32s3_wifi and 6 nbiot_node devices under
two edges, each edge with a shared 1 Mbit/s cell; variability on, non-IID data) until the
same simulated time (``run.max_sim_time_s``) with four edge triggers, each keeping 6 devices
per edge at work: ``all`` (select 40% of the fleet, 6 per edge, and wait for all of them),
``deadline`` (the same selection, aggregate what arrived after 2 s), ``buffered`` (FedBuff:
6 at work per edge, aggregate every 3 arrivals with (1 + s)^-0.5 staleness weights) and
``buffered`` with ``max_staleness = 8``. An edge sends its model to the cloud after 6 used
updates in every variant (one synchronous edge round, two buffered aggregations). Over three
seeds it measures accuracy at fixed simulated times (``evaluations.csv``), time and device
energy to the target, updates used and late, and the energy of discarded work. It writes
``fedbuff.png``, ``fedbuff.csv`` (one row per run) and ``fedbuff_summary.csv`` (mean, min
and max over seeds) into the output folder and prints both tables.

    python scenarios/studies/fedbuff.py [OUT_DIR] [--rounds N] [--seed S]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import hierfl
from hierfl.results import Result, atomic_write
from hierfl.study import accuracy_axes, save_study_figure, study_cli, study_figure, study_scenario

NAME = "fedbuff"
SCENARIO = Path(__file__).resolve().parents[1] / f"{NAME}.toml"
SEEDS = (0, 1, 2)
BUFFERED = ["aggregation.trigger=buffered", "aggregation.concurrency=6", "aggregation.buffer=3",
            "run.edge_rounds=2"]  # two aggregations of 3: 6 updates per edge model, as in sync
VARIANTS = [  # (label, overrides)
    ("sync all", []),
    ("sync deadline 2 s", ["aggregation.trigger=deadline", "aggregation.deadline_s=2.0"]),
    ("buffered C=6 K=3", BUFFERED),
    ("buffered, max_staleness 8", [*BUFFERED, "aggregation.max_staleness=8"]),
]
COLOURS = ["#000000", "#0072B2", "#D55E00", "#009E73"]  # Okabe-Ito
STYLES = ["-", "-", "-", "--"]  # the two buffered lines nearly coincide
STRAGGLER = "nbiot_node"  # the profile whose updates a deadline or max_staleness drops
TIMES_S = (10.0, 20.0, 40.0, 60.0)  # accuracy read at these simulated times
SUMMARY = ["time_to_target_s", "energy_to_target_j", "energy_j", "energy_wasted_j",
           "wasted_share", "updates_used", "updates_late", "edge_aggregations",
           "straggler_updates_used", "straggler_updates_late", "straggler_accuracy",
           *(f"accuracy_at_{t:g}s" for t in TIMES_S)]


def main(
    out_dir: str | Path = f"runs/studies/{NAME}", rounds: int | None = None,
    seed: int | None = None, time_s: float | None = None,
) -> pd.DataFrame:
    """Run every variant on every seed (``seed``: that one only), write the figure and both
    tables; return the table of runs.

    ``rounds`` overrides ``run.cloud_rounds`` and ``time_s`` the simulated time limit
    (``run.max_sim_time_s``, default the scenario's 60 s). Times are simulated seconds,
    energy joules.
    """
    out, base = study_scenario(SCENARIO, out_dir, rounds)
    if time_s is not None:
        base = base.with_overrides([f"run.max_sim_time_s={time_s}"])
    seeds = SEEDS if seed is None else (seed,)
    runs = {(label, s): hierfl.run(base.with_overrides([*overrides, f"seed={s}"]))
            for label, overrides in VARIANTS for s in seeds}
    limit_s = base.run.max_sim_time_s
    table = pd.DataFrame([_row(label, s, result, limit_s) for (label, s), result in runs.items()])
    atomic_write(out / f"{NAME}.csv", lambda p: table.to_csv(p, index=False))
    spread = summarise(table)
    atomic_write(out / f"{NAME}_summary.csv", lambda p: spread.to_csv(p, index=False))
    _plot(runs, seeds, base.run.target_accuracy, limit_s, out / f"{NAME}.png")
    return table


def _row(variant: str, seed: int, result: Result, limit_s: float) -> dict:
    """One run's figures up to ``limit_s``: accuracy at fixed times, time and energy to target
    (reached after the limit counts as not reached), energy (all of it and that of discarded
    work), updates used and late, aggregations, and what the stragglers contributed."""
    rounds, summary, events = result.rounds, result.summary, result.events
    wasted = float(rounds["energy_wasted_j"].sum())
    timed = _timed(result, limit_s)
    reached = summary.get("time_to_target_s")
    reached = reached is not None and reached <= limit_s
    stragglers = result.devices[result.devices["profile"] == STRAGGLER]
    per_profile = {row["profile"]: row for row in summary["per_profile"]}
    return {
        "variant": variant,
        "seed": seed,
        "cloud_rounds": len(rounds),
        "evaluated_until_s": float(timed.index.max()),
        "time_to_target_s": summary["time_to_target_s"] if reached else None,
        "energy_to_target_j": summary["energy_to_target_j"] if reached else None,
        "energy_j": float(summary["energy_j"]),
        "energy_wasted_j": wasted,
        "wasted_share": wasted / float(summary["energy_j"]),
        "updates_used": int(rounds["updates_used"].sum()),
        "updates_aggregated": int(rounds["devices_trained"].sum()),
        "updates_late": int(rounds["updates_late"].sum()),
        "edge_aggregations": int((events["kind"].astype(str) == "edge_aggregate").sum()),
        "straggler_updates_used": int(stragglers["rounds_trained"].sum()),
        "straggler_updates_late": int(stragglers["late_updates"].sum()),
        "straggler_accuracy": float(per_profile[STRAGGLER]["accuracy"]),
        **{f"accuracy_at_{t:g}s": timed.get(t, np.nan) for t in TIMES_S},
    }


def _timed(result: Result, limit_s: float) -> pd.Series:
    """Accuracy of the global model at each ``eval_every_s`` instant up to ``limit_s``, by
    simulated time (a synchronous run's last round may end after the limit)."""
    rows = result.evaluations
    rows = rows[(rows["trigger"].astype(str) == "interval") & (rows["sim_time_s"] <= limit_s)]
    return pd.Series(rows["accuracy"].to_numpy(), index=rows["sim_time_s"].to_numpy())


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, min and max over seeds of each SUMMARY column, per variant (in VARIANTS order);
    ``reached`` counts the seeds that reached the target (the time and energy to it are
    over those)."""
    grouped = table.groupby("variant", sort=False)
    parts = [grouped["seed"].count().rename("seeds"),
             grouped["time_to_target_s"].count().rename("reached")]
    for column in SUMMARY:
        stats = grouped[column].agg(["mean", "min", "max"])
        parts.append(stats.rename(columns=lambda stat, c=column: f"{c}_{stat}"))
    return pd.concat(parts, axis=1).reset_index()


def _plot(runs: dict, seeds: tuple[int, ...], target: float | None, limit_s: float,
          path: Path) -> None:
    """Accuracy vs simulated time (mean over seeds, min-max band), accuracy vs device
    energy (one thin line per seed), and updates used and late per variant."""
    fig = study_figure(15, 4.8)
    time_ax, energy_ax, updates_ax = fig.subplots(1, 3)
    for colour, style, (label, _) in zip(COLOURS, STYLES, VARIANTS, strict=True):
        curves = pd.concat([_timed(runs[(label, s)], limit_s) for s in seeds], axis=1)
        time_s = curves.index.to_numpy()
        time_ax.step(time_s, 100 * curves.mean(axis=1), where="post", color=colour, ls=style,
                     lw=1.6, label=label)
        time_ax.fill_between(time_s, 100 * curves.min(axis=1), 100 * curves.max(axis=1),
                             step="post", color=colour, alpha=0.15, lw=0)
        for s in seeds:
            rounds = runs[(label, s)].rounds
            energy_ax.plot(rounds["energy_j"].cumsum(), 100 * rounds["accuracy"], color=colour,
                           ls=style, lw=0.9, alpha=0.8)
    accuracy_axes(time_ax, "simulated time (s)", target)
    time_ax.set_xlim(0, limit_s)
    time_ax.set_title(f"global model (mean of {len(seeds)} seeds, band: min-max)", fontsize=10)
    time_ax.legend(fontsize=8, frameon=False, loc="lower right")
    accuracy_axes(energy_ax, "device energy spent (J)", target)
    energy_ax.set_title("accuracy after each cloud round vs device energy (per seed)",
                        fontsize=10)
    _updates_bars(updates_ax, runs, seeds)
    fig.suptitle("Synchronous vs buffered (FedBuff) edges at equal simulated time: 12 phone_lte, "
                 "12 esp32s3_wifi, 6 nbiot_node; 6 devices per edge at work", fontsize=11)
    save_study_figure(fig, path)


def _updates_bars(ax, runs: dict, seeds: tuple[int, ...]) -> None:
    """Updates used and late per variant, mean over seeds with min-max whiskers."""
    x = np.arange(len(VARIANTS))
    for offset, column, colour in ((-0.2, "updates_used", "#999999"),
                                   (0.2, "updates_late", "#E69F00")):
        counts = np.array([[int(runs[(label, s)].rounds[column].sum()) for s in seeds]
                           for label, _ in VARIANTS])
        mean = counts.mean(axis=1)
        ax.bar(x + offset, mean, 0.4, color=colour, label=column.replace("_", " "))
        ax.errorbar(x + offset, mean, yerr=[mean - counts.min(axis=1), counts.max(axis=1) - mean],
                    fmt="none", ecolor="black", lw=1, capsize=3)
    ax.set_xticks(x, [label.replace(", ", ",\n") for label, _ in VARIANTS], fontsize=8)
    ax.set_ylabel("updates over the run")
    ax.set_title("updates used and late (mean, min-max)", fontsize=10)
    ax.grid(axis="y", color="#DDDDDD", lw=0.5)
    ax.legend(fontsize=8, frameon=False)


def cli(argv: list[str] | None = None) -> None:
    """Parse OUT_DIR, --rounds and --seed, run the study, print its tables."""
    study_cli(NAME, __doc__, main, "cloud rounds per run (default: as many as fit in the "
              "time limit)", argv, extra_tables=[f"{NAME}_summary.csv"])


if __name__ == "__main__":
    cli()
