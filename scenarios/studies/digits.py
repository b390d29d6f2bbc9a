"""Study: real data (scikit-learn's 8x8 digits) and the dscnn on a mixed mcu / soc / mobile fleet.

Runs ``scenarios/digits.toml`` (dscnn, batch 8) and two variants: batch 16, where the dscnn's
training memory (``4 * (2 * n_params + batch_size * activations_per_sample)`` bytes) exceeds
the mcu's 512 KiB so the mcus are skipped, and the compact MLP as a reference. It reports the
accuracy curves, one row per variant, and one row per variant and device profile (memory
needed and available, whether the model fits, skip events, rounds trained, compute seconds per
round, energy, accuracy of the final model on the profile's own data). It writes
``digits.png``, ``digits.csv`` and ``digits_profiles.csv`` into the output folder and prints
both tables.

    python scenarios/studies/digits.py [OUT_DIR] [--rounds N] [--seed S]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import hierfl
from hierfl.costs import train_bytes
from hierfl.results import Result, atomic_write
from hierfl.study import (
    accuracy_axes,
    fleet_counts,
    save_study_figure,
    study_cli,
    study_figure,
    study_scenario,
)

NAME = "digits"
SCENARIO = Path(__file__).resolve().parents[1] / f"{NAME}.toml"
VARIANTS = [  # (label, model.name, run.batch_size)
    ("dscnn, batch 8", "dscnn", 8),
    ("dscnn, batch 16", "dscnn", 16),
    ("compact MLP, batch 8 (reference)", "compact", 8),
]
COLOURS = ["#0072B2", "#D55E00", "#999999"]  # Okabe-Ito
PROFILE_COLOURS = {"mcu": "#CC79A7", "soc": "#E69F00", "mobile": "#009E73"}


def main(
    out_dir: str | Path = f"runs/studies/{NAME}", rounds: int | None = None, seed: int | None = None
) -> pd.DataFrame:
    """Run every variant, write the figure and both CSV tables; return the variants table.

    ``rounds`` overrides ``run.cloud_rounds`` and ``seed`` the scenario's seed. Times are
    simulated seconds, memory KiB.
    """
    out, base = study_scenario(SCENARIO, out_dir, rounds, seed)
    scenarios = [
        base.with_overrides([f"model.name={model}", f"run.batch_size={batch}"])
        for _, model, batch in VARIANTS
    ]
    results = [hierfl.run(scenario) for scenario in scenarios]
    table = pd.DataFrame(
        [_row(label, s, r) for (label, *_), s, r in zip(VARIANTS, scenarios, results, strict=True)]
    )
    profiles = pd.concat(
        [
            _profiles(label, s, r)
            for (label, *_), s, r in zip(VARIANTS, scenarios, results, strict=True)
        ],
        ignore_index=True,
    )
    atomic_write(out / f"{NAME}.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(out / f"{NAME}_profiles.csv", lambda p: profiles.to_csv(p, index=False))
    _plot(results, table, profiles, base, out / f"{NAME}.png")
    return table


def needed_kib(result: Result, batch_size: int) -> float:
    """KiB the model needs to train with ``batch_size`` under the memory model."""
    model = result.summary["model"]
    return train_bytes(model["n_params"], batch_size, model["activations_per_sample"]) / 1024


def _row(label: str, scenario, result: Result) -> dict:
    rounds, summary, events = result.rounds, result.summary, result.events
    trained = result.devices["rounds_trained"]
    return {
        "variant": label,
        "model": scenario.model.name,
        "batch_size": scenario.run.batch_size,
        "n_params": summary["model"]["n_params"],
        "train_kib": needed_kib(result, scenario.run.batch_size),
        "devices_training": int((trained > 0).sum()),
        "devices": len(trained),
        "skip_events": int((events["kind"].astype(str) == "skip").sum()),
        "rounds_to_target": summary.get("rounds_to_target"),
        "time_to_target_s": summary.get("time_to_target_s"),
        "max_accuracy": float(rounds["accuracy"].max()),
        "final_accuracy": float(rounds["accuracy"].iloc[-1]),
        "sim_time_s": float(rounds["sim_time_s"].iloc[-1]),
        "energy_j": float(rounds["energy_j"].sum()),
    }


def _profiles(label: str, scenario, result: Result) -> pd.DataFrame:
    """One row per device profile: memory fit, skips, training time and energy, accuracy."""
    devices, events = result.devices, result.events
    kinds = events["kind"].astype(str)
    profile_of = dict(zip(devices["device"], devices["profile"], strict=True))
    compute = events[kinds == "compute"]
    compute_s = (
        (compute["t_end"] - compute["t_start"])
        .groupby(compute["node"].astype(str).map(profile_of))
        .mean()
    )
    skips = events.loc[kinds == "skip", "node"].astype(str).map(profile_of).value_counts()
    needed = needed_kib(result, scenario.run.batch_size)
    rows = []
    for profile, group in devices.groupby("profile", sort=False):
        memory_kib = scenario.profile(profile).memory_kb
        rows.append(
            {
                "variant": label,
                "profile": profile,
                "devices": len(group),
                "memory_kib": memory_kib,
                "train_kib": needed,
                "fits": bool(needed <= memory_kib),
                "skip_events": int(skips.get(profile, 0)),
                "rounds_trained": float(group["rounds_trained"].mean()),
                "compute_s_per_round": float(compute_s.get(profile, np.nan)),
                "energy_j": float(group["energy_j"].mean()),
                "local_accuracy": float(group["accuracy"].mean()),
            }
        )
    return pd.DataFrame(rows)


def _plot(
    results: list[Result], table: pd.DataFrame, profiles: pd.DataFrame, base, path: Path
) -> None:
    """Accuracy vs simulated time and vs cloud round; training memory against device memory."""
    fig = study_figure(14, 4.8)
    time_ax, round_ax, memory_ax = fig.subplots(1, 3, width_ratios=(1, 1, 0.9))
    target = base.run.target_accuracy
    for colour, result, label in zip(COLOURS, results, table["variant"], strict=True):
        rounds = result.rounds
        time_ax.plot(
            rounds["sim_time_s"], 100 * rounds["accuracy"], color=colour, lw=1.4, label=label
        )
        round_ax.plot(rounds["cloud_round"] + 1, 100 * rounds["accuracy"], color=colour, lw=1.4)
    time_label = "simulated time (s, log scale)"
    for ax, label in ((time_ax, time_label), (round_ax, "cloud rounds completed")):
        accuracy_axes(ax, label, target)
    time_ax.set_xscale("log")  # runs without the slow mcus finish 20x sooner
    round_ax.set_xlim(left=0)
    time_ax.set_title("accuracy against simulated time", fontsize=10)
    round_ax.set_title("accuracy against cloud rounds", fontsize=10)
    round_ax.xaxis.get_major_locator().set_params(integer=True)

    x = np.arange(len(table))
    memory_ax.bar(x, table["train_kib"], 0.55, color=COLOURS)
    for xi, kib, used, total in zip(
        x, table["train_kib"], table["devices_training"], table["devices"], strict=True
    ):
        memory_ax.annotate(
            f"{kib:.0f} KiB\n{used}/{total} devices train",
            (xi, kib),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7.5,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5},
        )
    for profile in dict.fromkeys(profiles["profile"]):
        kib = float(profiles.loc[profiles["profile"] == profile, "memory_kib"].iloc[0])
        memory_ax.axhline(
            kib,
            color=PROFILE_COLOURS.get(profile, "#666666"),
            ls="-.",
            lw=1.2,
            label=f"{profile} memory ({kib:,.0f} KiB)",
        )
    memory_ax.set_yscale("log")
    top = max(float(profiles["memory_kib"].max()), float(table["train_kib"].max()))
    memory_ax.set_ylim(10, top * 40)
    memory_ax.legend(loc="upper left", fontsize=7.5, frameon=False)
    memory_ax.set_xlim(-0.6, len(x) - 0.4)
    memory_ax.set_xticks(
        x, [v.replace(" (", "\n(").replace(", ", ",\n", 1) for v in table["variant"]], fontsize=7.5
    )
    memory_ax.set_ylabel("training memory needed (KiB, log scale)")
    memory_ax.set_title("training memory against device memory", fontsize=10)
    memory_ax.grid(axis="y", color="#DDDDDD", lw=0.5)
    memory_ax.set_axisbelow(True)
    handles, labels = time_ax.get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="outside lower center", ncol=len(labels), fontsize=9, frameon=False
    )
    counts = fleet_counts(base)
    fig.suptitle(
        f"8x8 digits (scikit-learn) on a mixed fleet ({counts}, {base.topology.edges} edges)",
        fontsize=11,
    )
    save_study_figure(fig, path)


def cli(argv: list[str] | None = None) -> None:
    """Parse OUT_DIR, --rounds and --seed, run the study, print its table."""
    study_cli(
        NAME,
        __doc__,
        main,
        "cloud rounds per variant (default: the scenario's 100)",
        argv,
        extra_tables=[f"{NAME}_profiles.csv"],
    )


if __name__ == "__main__":
    cli()
