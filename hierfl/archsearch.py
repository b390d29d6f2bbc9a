"""Hardware-aware choice of a model per tier: a sweep of width/depth candidates, scored per
device profile by accuracy after a short run against time and energy, with Pareto fronts.

A candidate is a built-in depth (``model.name``: ``tiny`` has one hidden layer, ``compact``
two, ...) at one width (``model.variants = [w]``: every device that holds that variant
trains it; the others are skipped). Each candidate runs as a point of a ``hierfl sweep``
(``hierfl.sweep``); then, for each profile that could train it, the candidate is scored by
the accuracy of its model on that profile's devices' own samples, the seconds a device of the
profile spends per round (download, compute, upload), and the joules it draws per round.
A candidate is on a profile's Pareto front when no other candidate is at least as accurate,
as fast and as frugal there, and better in one of the three.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from hierfl.plots import new_figure
from hierfl.results import atomic_write
from hierfl.sweep import plan_sweep, run_sweep

__all__ = ["arch_table", "pareto_front", "plot_arch", "search"]

PHASES = ("download", "compute", "upload")
WORK = ("energy_compute_j", "energy_tx_j", "energy_rx_j")


def pareto_front(accuracy: np.ndarray, round_s: np.ndarray, energy_j: np.ndarray) -> np.ndarray:
    """Which candidates no other beats: at least as accurate, fast and frugal, better in one.

    >>> pareto_front(np.array([0.9, 0.8, 0.7]), np.array([2.0, 1.0, 1.5]),
    ...              np.array([1.0, 1.0, 2.0])).tolist()
    [True, True, False]
    """
    score = np.column_stack([-np.asarray(accuracy), round_s, energy_j])
    worse_or_equal = (score[:, None, :] <= score[None, :, :]).all(axis=2)
    better = (score[:, None, :] < score[None, :, :]).any(axis=2)
    dominated = (worse_or_equal & better).any(axis=0)
    return ~dominated


def search(
    scenario: str | Path,
    models: list[str],
    widths: list[float],
    rounds: int,
    seeds: int,
    out: str | Path,
    workers: int | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Run every (model, width) candidate for ``rounds`` cloud rounds and ``seeds`` seeds
    into ``out`` (a sweep folder); write the per-profile table and figure. Returns the table
    and the errors of candidates that could not run (a width that fits no device)."""
    grids = [
        f"model.name={','.join(models)}",
        f"model.variants={','.join(f'[{w:g}]' for w in widths)}",
        f"run.cloud_rounds={rounds}",
    ]
    plan = plan_sweep(scenario, grids, seeds, out)
    runs = run_sweep(plan, workers=workers)
    table = arch_table(Path(out))
    atomic_write(Path(out) / "archsearch.csv", lambda p: table.to_csv(p, index=False))
    plot_arch(table, Path(out) / "archsearch.png")
    failed = runs.loc[runs["status"] != "ok", "error"].drop_duplicates().astype(str).tolist()
    return table, failed


def arch_table(out: Path) -> pd.DataFrame:
    """One row per candidate and profile that trained it (means over seeds), with ``pareto``."""
    sweep = pd.read_csv(out / "sweep.csv")
    rows = [
        row
        for run in sweep.loc[sweep["status"] == "ok", "run"]
        for row in _profile_rows(out / run)
    ]
    if not rows:
        return pd.DataFrame(columns=["model", "width", "profile", "accuracy", "test_accuracy",
                                     "round_s", "energy_j_per_round", "seeds", "pareto"])
    per_seed = pd.DataFrame(rows)
    table = per_seed.groupby(["model", "width", "profile"], sort=False).agg(
        accuracy=("accuracy", "mean"),
        test_accuracy=("test_accuracy", "mean"),
        round_s=("round_s", "mean"),
        energy_j_per_round=("energy_j_per_round", "mean"),
        seeds=("accuracy", "size"),
    ).reset_index()
    table["pareto"] = False
    for _, group in table.groupby("profile", sort=False):
        front = pareto_front(group["accuracy"].to_numpy(), group["round_s"].to_numpy(),
                             group["energy_j_per_round"].to_numpy())
        table.loc[group.index, "pareto"] = front
    return table


def _profile_rows(run: Path) -> list[dict]:
    """Per profile that trained in this run: its model's accuracy, round time and energy."""
    summary = json.loads((run / "summary.json").read_text())
    devices = pd.read_csv(run / "devices.csv")
    events = pd.read_parquet(run / "events.parquet", columns=["kind", "node", "t_start", "t_end"])
    kinds = events["kind"].astype(str)
    work = events[kinds.isin(PHASES)]
    profile_of = dict(zip(devices["device"], devices["profile"], strict=True))
    busy_s = (work["t_end"] - work["t_start"]).groupby(
        work["node"].astype(str).map(profile_of)).sum()
    tier = summary["tiers"][0]
    rows = []
    for profile, group in devices.groupby("profile", sort=False):
        trained = int(group["rounds_trained"].sum())
        if group["width"].isna().all() or trained == 0:
            continue
        rows.append({
            "model": summary["scenario"]["model"]["name"],
            "width": tier["width"],
            "profile": profile,
            "accuracy": float(group["accuracy"].mean()),
            "test_accuracy": tier["test_accuracy"],
            "round_s": float(busy_s.get(profile, 0.0)) / trained,
            "energy_j_per_round": float(group[list(WORK)].to_numpy().sum()) / trained,
        })
    return rows


def plot_arch(table: pd.DataFrame, path: Path) -> Path:
    """One panel per profile: accuracy against energy per round, colour the seconds per
    round; candidates on the (three-way) Pareto front are ringed."""
    profiles = list(dict.fromkeys(table["profile"]))
    fig = new_figure(4.2 * max(1, len(profiles)), 4.2)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(profiles))))
    for ax, profile in zip(axes, profiles, strict=False):
        mine = table[table["profile"] == profile]
        points = ax.scatter(mine["energy_j_per_round"], 100 * mine["accuracy"],
                            c=mine["round_s"], cmap="viridis", s=36, zorder=3)
        front = mine[mine["pareto"]]
        ax.scatter(front["energy_j_per_round"], 100 * front["accuracy"], s=110,
                   facecolors="none", edgecolors="#D55E00", lw=1.4, zorder=4,
                   label="Pareto front (accuracy, time, energy)")
        for row in mine.itertuples():
            ax.annotate(f"{row.model} w{row.width:g}", (row.energy_j_per_round, 100 * row.accuracy),
                        xytext=(3, 3), textcoords="offset points", fontsize=7)
        ax.set_xlabel("device energy per round (J)")
        ax.set_ylabel("accuracy on the profile's own samples (%)")
        ax.set_title(profile, fontsize=10)
        ax.grid(color="#DDDDDD", lw=0.5)
        ax.legend(fontsize=7, frameon=False, loc="lower right")
        fig.colorbar(points, ax=ax, label="seconds per round")
    fig.suptitle("architecture candidates per profile after a short run", fontsize=11)
    atomic_write(path, lambda temp: fig.savefig(temp, format="png"))
    return path
