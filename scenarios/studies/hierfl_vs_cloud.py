"""Study: does two-tier FedAvg reach a target accuracy sooner than cloud-only FedAvg?

Liu et al. 2020 ("Client-Edge-Cloud Hierarchical Federated Learning", ICC) claim that edge
aggregation, by saving costly trips over the wide-area backhaul, reaches a target accuracy in
less wall-clock time than cloud-only FedAvg. This script runs ``scenarios/hierfl_vs_cloud.toml``
(the tutorial066 fleet, every device selected) as cloud-only FedAvg and as two-tier FedAvg with
1, 2 and 4 edge rounds per cloud round, over three backhauls: the tutorial's 100 Mbit/s, 20 ms
(a control) and two slow, high-latency ones. Every variant gets the same budget of device
training rounds (edge rounds): cloud-only runs N cloud rounds, two-tier with k edge rounds
runs N / k. It writes ``hierfl_vs_cloud.png`` and ``hierfl_vs_cloud.csv`` into the output
folder and prints the table.

    python scenarios/studies/hierfl_vs_cloud.py [OUT_DIR] [--rounds N] [--seed S]
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

import hierfl
from hierfl.results import Result, atomic_write, compare_table
from hierfl.study import accuracy_axes, save_study_figure, study_cli, study_figure

NAME = "hierfl_vs_cloud"
SCENARIO = Path(__file__).resolve().parents[1] / f"{NAME}.toml"
BACKHAULS = [  # (label, bandwidth_kbps, latency_ms)
    ("100 Mbit/s, 20 ms (control)", 100_000, 20),
    ("5 Mbit/s, 100 ms", 5_000, 100),
    ("1 Mbit/s, 300 ms", 1_000, 300),
]
VARIANTS = [  # (label, topology.mode, run.edge_rounds, backhaul split among an edge's devices)
    ("cloud-only FedAvg", "cloud_only", 1, False),
    ("cloud-only, shared backhaul", "cloud_only", 1, True),
    ("two-tier, 1 edge round", "hierarchical", 1, False),
    ("two-tier, 2 edge rounds", "hierarchical", 2, False),
    ("two-tier, 4 edge rounds", "hierarchical", 4, False),
]
COLOURS = ["#000000", "#999999", "#56B4E9", "#0072B2", "#D55E00"]  # Okabe-Ito
STYLES = [  # cloud-only and 1 edge round coincide in accuracy: a thick line under a dashed one
    {"lw": 3.0, "marker": "s", "ms": 4, "alpha": 0.45, "zorder": 2},
    {"lw": 1.3, "marker": "s", "ms": 2.5, "ls": ":", "zorder": 3},
    {"lw": 1.3, "marker": "o", "ms": 2.5, "ls": "--", "zorder": 3},
    {"lw": 1.3, "marker": "^", "ms": 3, "zorder": 3},
    {"lw": 1.3, "marker": "D", "ms": 3, "zorder": 3},
]


def main(
    out_dir: str | Path = f"runs/studies/{NAME}", rounds: int | None = None, seed: int | None = None
) -> pd.DataFrame:
    """Run every backhaul x variant, write the figure and the CSV table; return the table.

    ``rounds`` is the budget of edge rounds (device training rounds) per variant; by default
    the scenario's ``cloud_rounds * edge_rounds``. ``seed`` overrides the scenario's seed.
    Times are simulated seconds.

    hierfl gives every transfer a link's full bandwidth (shared links are planned, not built),
    so in cloud-only mode an edge's devices cross its backhaul side by side at full speed. The
    "backhaul shared" variant brackets contention from the other side: it divides the backhaul
    bandwidth by the devices behind each edge, as if all their transfers overlapped.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = hierfl.load_scenario(SCENARIO, [] if seed is None else [f"seed={seed}"])
    budget = rounds if rounds is not None else base.run.cloud_rounds * base.run.edge_rounds
    per_edge = math.ceil(base.n_devices / max(1, base.topology.edges))
    rows, curves = [], {}
    for backhaul, bandwidth_kbps, latency_ms in BACKHAULS:
        results = []
        for label, mode, edge_rounds, shared in VARIANTS:
            bandwidth = bandwidth_kbps / (per_edge if shared else 1)
            scenario = base.with_overrides(
                [
                    f"topology.mode={mode}",
                    f"run.edge_rounds={edge_rounds}",
                    f"run.cloud_rounds={max(1, budget // edge_rounds)}",
                    f"topology.backhaul.bandwidth_kbps={bandwidth}",
                    f"topology.backhaul.latency_ms={latency_ms}",
                ]
            )
            results.append(hierfl.run(scenario))
            curves[backhaul, label] = results[-1].rounds
        rows.append(_table(results, backhaul))
    table = pd.concat(rows, ignore_index=True)
    atomic_write(out / f"{NAME}.csv", lambda p: table.to_csv(p, index=False))
    _plot(curves, table, base.run.target_accuracy, out / f"{NAME}.png")
    return table


def _table(results: list[Result], backhaul: str) -> pd.DataFrame:
    """One row per variant of one backhaul, with the speed-up over cloud-only."""
    labels = [label for label, *_ in VARIANTS]
    table = compare_table(results, labels)
    to_target = ["time_to_target_s", "energy_to_target_j", "rounds_to_target"]
    table[to_target] = table[to_target].astype(float)  # None (not reached) -> NaN
    ks = np.array([k for _, _, k, _ in VARIANTS])
    cloud_rounds = np.array([len(r.rounds) for r in results])
    table.insert(0, "backhaul", backhaul)
    table = table.rename(columns={"run": "variant"})
    table.insert(2, "edge_rounds", ks)
    table.insert(3, "cloud_rounds", cloud_rounds)
    table["s_per_edge_round"] = table["sim_time_s"] / (cloud_rounds * ks)
    table["edge_rounds_to_target"] = table["rounds_to_target"] * ks
    baseline = table["time_to_target_s"].iloc[0]
    table["speedup_vs_cloud_only"] = baseline / table["time_to_target_s"]
    return table[
        [
            "backhaul",
            "variant",
            "edge_rounds",
            "cloud_rounds",
            "s_per_edge_round",
            "rounds_to_target",
            "edge_rounds_to_target",
            "time_to_target_s",
            "speedup_vs_cloud_only",
            "energy_to_target_j",
            "final_accuracy",
            "sim_time_s",
            "energy_j",
            "bytes_up",
        ]
    ]


def _plot(curves: dict, table: pd.DataFrame, target: float | None, path: Path) -> None:
    """Accuracy vs simulated time, one panel per backhaul, and time to target as bars."""
    fig = study_figure(12, 8)
    axes = fig.subplots(2, 2).ravel()
    for ax, (backhaul, _, _) in zip(axes, BACKHAULS, strict=False):
        for colour, style, (label, *_) in zip(COLOURS, STYLES, VARIANTS, strict=True):
            rounds = curves[backhaul, label]
            ax.plot(
                rounds["sim_time_s"], 100 * rounds["accuracy"], color=colour, label=label, **style
            )
        accuracy_axes(ax, "simulated time (s)", target)
        ax.set_title(f"backhaul {backhaul}", fontsize=10)
        ax.set_xlim(left=0)
    _bars(axes[len(BACKHAULS)], table)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=9, frameon=False)
    goal = f"{100 * target:.0f}%" if target is not None else "target"
    fig.suptitle(
        f"Two-tier vs cloud-only FedAvg, tutorial066 fleet, same budget of edge rounds: "
        f"time to {goal} test accuracy",
        fontsize=11,
    )
    save_study_figure(fig, path)


def _bars(ax, table: pd.DataFrame) -> None:
    """Grouped bars: time to target per backhaul and variant; 'not reached' where it wasn't."""
    width = 0.8 / len(VARIANTS)
    top = np.nanmax(table["time_to_target_s"].to_numpy(float), initial=0.0)
    top = top if math.isfinite(top) and top > 0 else 1.0
    for i, (colour, (label, *_)) in enumerate(zip(COLOURS, VARIANTS, strict=True)):
        part = table[table["variant"] == label]
        x = np.arange(len(part)) + (i - (len(VARIANTS) - 1) / 2) * width
        values = part["time_to_target_s"].to_numpy(float)
        ax.bar(x, np.nan_to_num(values), width, color=colour)
        for xi, value in zip(x, values, strict=True):
            reached = math.isfinite(value)
            ax.annotate(
                f"{value:.0f}" if reached else "not reached",
                (xi, value if reached else 0),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=0 if reached else 90,
            )
    ax.set_xticks(
        range(len(BACKHAULS)), [b.replace(" (", "\n(") for b, _, _ in BACKHAULS], fontsize=8
    )
    ax.set_ylim(0, top * 1.15)
    ax.set_xlabel("backhaul (bandwidth, one-way latency)")
    ax.set_ylabel("simulated time to target (s)")
    ax.set_title("time to target accuracy (lower is better)", fontsize=10)
    ax.grid(axis="y", color="#DDDDDD", lw=0.5)
    ax.set_axisbelow(True)


def cli(argv: list[str] | None = None) -> None:
    """Parse OUT_DIR, --rounds and --seed, run the study, print its table."""
    study_cli(NAME, __doc__, main, "edge rounds of device training per variant (default: 40)", argv)


if __name__ == "__main__":
    cli()
