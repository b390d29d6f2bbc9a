"""Study: server optimisers and FedProx on non-iid digits (FedAvg, FedAvgM, FedAdam, FedProx).

Runs ``scenarios/optimizers.toml`` (8x8 digits over 20 phones by a Dirichlet(0.3) label
partition, 2 edges, the compact MLP) with four aggregation settings on three seeds: FedAvg,
FedAvgM and FedAdam at the cloud (Reddi et al. 2021), and FedAvg with FedProx's proximal term
(mu = 0.01). Every variant of a seed selects the same devices (all of them) and draws the
same data, so the curves differ by the optimiser alone. It writes ``optimizers.png`` (test
accuracy against cloud rounds: the mean over seeds, and the range) and ``optimizers.csv``
(one row per variant and seed) into the output folder and prints the table.

    python scenarios/studies/optimizers.py [OUT_DIR] [--rounds N] [--seed S]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import hierfl
from hierfl.results import Result, atomic_write
from hierfl.study import accuracy_axes, save_study_figure, study_cli, study_figure, study_scenario

NAME = "optimizers"
SCENARIO = Path(__file__).resolve().parents[1] / f"{NAME}.toml"
SEEDS = (42, 43, 44)
VARIANTS = {  # label: overrides of the scenario
    "FedAvg": [],
    "FedAvgM (lr 1, momentum 0.9)": [
        "aggregation.cloud_optimizer=fedavgm", "aggregation.server_lr=1.0",
        "aggregation.server_momentum=0.9",
    ],
    "FedAdam (lr 0.1, tau 1e-3)": [
        "aggregation.cloud_optimizer=fedadam", "aggregation.server_lr=0.1",
        "aggregation.tau=0.001",
    ],
    "FedProx (mu 0.01)": ["aggregation.mu=0.01"],
}
COLOURS = ["#999999", "#0072B2", "#D55E00", "#009E73"]  # Okabe-Ito
STYLES = ["-", "-", "-", (0, (4, 3))]  # FedProx dashed: at mu = 0.01 it can lie on FedAvg


def main(
    out_dir: str | Path = f"runs/studies/{NAME}", rounds: int | None = None, seed: int | None = None
) -> pd.DataFrame:
    """Run every variant on every seed (or only ``seed``); write the figure and the table.

    ``rounds`` overrides ``run.cloud_rounds``. Returns one row per variant and seed.
    """
    out, base = study_scenario(SCENARIO, out_dir, rounds)
    seeds = SEEDS if seed is None else (seed,)
    curves: dict[str, list[np.ndarray]] = {label: [] for label in VARIANTS}
    rows = []
    for label, overrides in VARIANTS.items():
        for s in seeds:
            result = hierfl.run(base.with_overrides([f"seed={s}", *overrides]))
            curves[label].append(result.rounds["accuracy"].to_numpy())
            rows.append(_row(label, s, result))
    table = pd.DataFrame(rows)
    atomic_write(out / f"{NAME}.csv", lambda p: table.to_csv(p, index=False))
    _plot(curves, base, len(seeds), out / f"{NAME}.png")
    return table


def _row(label: str, seed: int, result: Result) -> dict:
    accuracy = result.rounds["accuracy"]
    return {
        "variant": label,
        "seed": seed,
        "accuracy_round_10": float(accuracy.iloc[min(9, len(accuracy) - 1)]),
        "final_accuracy": float(accuracy.iloc[-1]),
        "max_accuracy": float(accuracy.max()),
        "rounds_to_target": result.summary.get("rounds_to_target"),
        "time_to_target_s": result.summary.get("time_to_target_s"),
    }


def _plot(curves: dict[str, list[np.ndarray]], base, seeds: int, path: Path) -> None:
    """Accuracy against cloud rounds: mean over seeds, and the band from the lowest to the
    highest seed."""
    fig = study_figure(7.5, 4.6)
    ax = fig.subplots()
    for colour, style, (label, runs) in zip(COLOURS, STYLES, curves.items(), strict=True):
        stacked = 100 * np.vstack(runs)
        x = np.arange(1, stacked.shape[1] + 1)
        ax.plot(x, stacked.mean(axis=0), color=colour, ls=style, lw=2.2 if style == "-" else 1.6,
                label=label)
        ax.fill_between(x, stacked.min(axis=0), stacked.max(axis=0), color=colour, alpha=0.15)
    accuracy_axes(ax, "cloud rounds completed", base.run.target_accuracy)
    ax.set_xlim(left=0)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.set_title(
        f"non-iid 8x8 digits (Dirichlet {base.data.alpha}), {base.n_devices} devices, "
        f"{base.topology.edges} edges: mean of {seeds} seed(s), band = min to max",
        fontsize=9,
    )
    save_study_figure(fig, path)


def cli(argv: list[str] | None = None) -> None:
    """Parse OUT_DIR, --rounds and --seed, run the study, print its table."""
    study_cli(NAME, __doc__, main, "cloud rounds per run (default: the scenario's 30)", argv)


if __name__ == "__main__":
    cli()
