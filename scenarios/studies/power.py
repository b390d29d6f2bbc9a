"""Study: power-aware scheduling against battery-priority, random and all (tutorial exercise 4).

Runs ``scenarios/power.toml`` (10 Wi-Fi and 10 NB-IoT sensor boards, 1 mAh each, non-IID
data) with the selection policies ``all``, ``random``, ``battery`` and ``power`` (utility per
forecast joule, hierfl.policies.select_power), over three seeds. For each it measures the
rounds survived (the last cloud round that aggregated an update), boards dropped, time and
device energy to the target accuracy, final accuracy, and the fairness of participation:
Jain's index over the rounds each board trained (1: all equal) and the boards that never
trained. It writes ``power.png`` (seed 42), ``power_runs.csv`` (every seed) and ``power.csv``
(the mean over seeds), and prints both tables.

    python scenarios/studies/power.py [OUT_DIR] [--rounds N] [--seed S]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import hierfl
from hierfl.results import Result, atomic_write
from hierfl.study import accuracy_axes, save_study_figure, study_cli, study_figure, study_scenario

NAME = "power"
SCENARIO = Path(__file__).resolve().parents[1] / f"{NAME}.toml"
POLICIES = ("all", "random", "battery", "power")
COLOURS = ("#000000", "#E69F00", "#0072B2", "#009E73")  # Okabe-Ito
SEEDS = (42, 43, 44)


def main(
    out_dir: str | Path = f"runs/studies/{NAME}", rounds: int | None = None, seed: int | None = None
) -> pd.DataFrame:
    """Run every policy for every seed (or only ``seed``); write both CSVs and the figure of
    the first seed; return the mean over seeds per policy."""
    out, base = study_scenario(SCENARIO, out_dir, rounds)
    seeds = SEEDS if seed is None else (seed,)
    rows, first = [], []
    for s in seeds:
        for policy in POLICIES:
            result = hierfl.run(base.with_overrides([f"seed={s}", f'selection.policy="{policy}"']))
            rows.append({"seed": s, **_row(policy, result)})
            if s == seeds[0]:
                first.append(result)
    runs = pd.DataFrame(rows)
    table = runs.drop(columns="seed").groupby("policy", sort=False).mean().reset_index()
    atomic_write(out / f"{NAME}_runs.csv", lambda p: runs.to_csv(p, index=False))
    atomic_write(out / f"{NAME}.csv", lambda p: table.to_csv(p, index=False))
    _plot(first, base.run.target_accuracy, seeds[0], out / f"{NAME}.png")
    return table


def jain(values: np.ndarray) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one takes everything.

    >>> jain(np.array([2, 2, 2])), jain(np.array([4, 0, 0, 0]))
    (1.0, 0.25)
    """
    values = np.asarray(values, dtype=np.float64)
    total = float((values**2).sum())
    return float(values.sum() ** 2 / (len(values) * total)) if total else 1.0


def _row(policy: str, result: Result) -> dict:
    """One run's figures: survival, energy and time to target, accuracy, fairness."""
    rounds, devices, summary = result.rounds, result.devices, result.summary
    active = rounds[rounds["devices_trained"] > 0]
    trained = devices["rounds_trained"].to_numpy()
    return {
        "policy": policy,
        "rounds_survived": int(active["cloud_round"].max()) + 1 if len(active) else 0,
        "boards_dropped": int(devices["dropped"].sum()),
        "time_to_target_s": summary.get("time_to_target_s"),
        "energy_to_target_j": summary.get("energy_to_target_j"),
        "final_accuracy": float(rounds["accuracy"].iloc[-1]),
        "energy_j": float(devices["energy_j"].sum()),
        "jain_participation": jain(trained),
        "never_trained": int((trained == 0).sum()),
    }


def _plot(results: list[Result], target: float | None, seed: int, path: Path) -> None:
    """Accuracy vs simulated time, and the rounds each board trained, for every policy."""
    fig = study_figure(13, 4.6)
    accuracy_ax, share_ax = fig.subplots(1, 2, width_ratios=(1.2, 1))
    width = 0.8 / len(results)
    for k, (colour, policy, result) in enumerate(zip(COLOURS, POLICIES, results, strict=True)):
        rounds = result.rounds
        accuracy_ax.plot(rounds["sim_time_s"], 100 * rounds["accuracy"], color=colour, lw=1.4,
                         label=policy)
        devices = result.devices
        x = np.arange(len(devices)) + (k - (len(results) - 1) / 2) * width
        share_ax.bar(x, devices["rounds_trained"], width, color=colour)
    accuracy_axes(accuracy_ax, "simulated time (s)", target)
    accuracy_ax.set_xscale("log")
    accuracy_ax.set_title("accuracy of the global model", fontsize=10)
    accuracy_ax.legend(fontsize=8, frameon=False)
    names = results[0].devices["profile"].astype(str)
    share_ax.set_xticks(np.arange(len(names)), [n.split("_")[0] for n in names], rotation=90,
                        fontsize=7)
    share_ax.set_ylabel("cloud rounds the board trained in")
    share_ax.set_title("participation per board", fontsize=10)
    share_ax.grid(axis="y", color="#DDDDDD", lw=0.5)
    fig.suptitle(f"Selection policies on 10 Wi-Fi and 10 NB-IoT boards, 1 mAh each "
                 f"(seed {seed})", fontsize=11)
    save_study_figure(fig, path)


def cli(argv: list[str] | None = None) -> None:
    """Parse OUT_DIR, --rounds and --seed, run the study, print its table."""
    study_cli(NAME, __doc__, main, "cloud rounds per run (default: the scenario's 200)", argv,
              extra_tables=[f"{NAME}_runs.csv"])


if __name__ == "__main__":
    cli()
