"""Study: heterogeneous models (HeteroFL) vs dropping what does not fit vs the smallest for all.

Runs ``scenarios/heterofl.toml`` (6 mcu, 6 soc, 6 mobile on 8x8 digits) three ways, each on
three seeds: HeteroFL (``variants = [1, 0.5, 0.25]``: every tier trains the widest compact
variant its memory holds), drop what does not fit (``variants = [1]``: only the phones hold
the full model; the others are skipped), and the smallest model for all (``variants =
[0.25]``). For each strategy and device profile it reports the model that profile runs (its
tier's slice of the global model): its test accuracy, its accuracy on the profile's own
samples, and when it first reached the target, with the fleet's energy until then. It writes
``heterofl.png``, ``heterofl.csv`` (means over seeds) and ``heterofl_runs.csv`` (one row per
run and profile) into the output folder and prints both tables.

    python scenarios/studies/heterofl.py [OUT_DIR] [--rounds N] [--seed S]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import hierfl
from hierfl.results import Result, atomic_write
from hierfl.study import accuracy_axes, fleet_counts, save_study_figure, study_cli, study_figure

NAME = "heterofl"
SCENARIO = Path(__file__).resolve().parents[1] / f"{NAME}.toml"
STRATEGIES = [  # (label, model.variants)
    ("HeteroFL", "[1, 0.5, 0.25]"),
    ("drop what does not fit", "[1]"),
    ("smallest for all", "[0.25]"),
]
SEEDS = (42, 43, 44)
COLOURS = {"HeteroFL": "#0072B2", "drop what does not fit": "#D55E00",
           "smallest for all": "#009E73"}  # Okabe-Ito
PROFILES = ("mcu", "soc", "mobile")


def main(
    out_dir: str | Path = f"runs/studies/{NAME}", rounds: int | None = None, seed: int | None = None
) -> pd.DataFrame:
    """Run every strategy on every seed (``seed``: that one only), write the figure and both
    tables; return the table of means over seeds."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = SEEDS if seed is None else (seed,)
    base = hierfl.load_scenario(SCENARIO)
    if rounds is not None:
        base = base.with_overrides([f"run.cloud_rounds={rounds}"])
    runs, curves = [], {}
    for label, variants in STRATEGIES:
        for s in seeds:
            scenario = base.with_overrides([f"model.variants={variants}", f"seed={s}"])
            result = hierfl.run(scenario)
            runs += _rows(label, s, result)
            if s == seeds[0]:
                curves[label] = result
    per_run = pd.DataFrame(runs)
    table = _means(per_run)
    atomic_write(out / f"{NAME}.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(out / f"{NAME}_runs.csv", lambda p: per_run.to_csv(p, index=False))
    _plot(curves, table, base, out / f"{NAME}.png")
    return table


def _rows(label: str, seed: int, result: Result) -> list[dict]:
    """One row per profile: the width it trains and its tier's figures (NaN if skipped)."""
    devices, summary = result.devices, result.summary
    tiers = {tier["width"]: tier for tier in summary["tiers"]}
    rows = []
    for profile in PROFILES:
        mine = devices[devices["profile"] == profile]
        width = float(mine["width"].iloc[0])
        tier = tiers.get(width, {})
        rows.append({
            "strategy": label,
            "seed": seed,
            "profile": profile,
            "width": width,
            "test_accuracy": tier.get("test_accuracy", np.nan),
            "own_accuracy": float(mine["accuracy"].mean()),
            "time_to_target_s": tier.get("time_to_target_s") or np.nan,
            "energy_to_target_j": tier.get("energy_to_target_j") or np.nan,
            "sim_time_s": summary["sim_time_s"],
            "fleet_energy_j": summary["energy_j"],
        })
    return rows


def _means(per_run: pd.DataFrame) -> pd.DataFrame:
    """Means (and the test accuracy's standard deviation) over seeds, per strategy and profile;
    ``reached`` counts the seeds whose model reached the target."""
    groups = per_run.groupby(["strategy", "profile"], sort=False)
    table = groups.agg(
        width=("width", "first"),
        test_accuracy=("test_accuracy", "mean"),
        test_accuracy_sd=("test_accuracy", "std"),
        own_accuracy=("own_accuracy", "mean"),
        reached=("time_to_target_s", "count"),
        time_to_target_s=("time_to_target_s", "mean"),
        energy_to_target_j=("energy_to_target_j", "mean"),
        fleet_energy_j=("fleet_energy_j", "mean"),
        sim_time_s=("sim_time_s", "mean"),
    ).reset_index()
    table["seeds"] = groups.size().to_numpy()
    return table


def _plot(curves: dict[str, Result], table: pd.DataFrame, base, path: Path) -> None:
    """Each profile's model against simulated time (first seed); final accuracy per profile."""
    fig = study_figure(13, 4.8)
    time_ax, bar_ax = fig.subplots(1, 2, width_ratios=(1.2, 1))
    styles = {"mcu": ":", "soc": "--", "mobile": "-"}
    for label, result in curves.items():
        widths = result.devices.groupby("profile")["width"].first()
        for profile in PROFILES:
            if widths[profile] != widths[profile]:  # skipped: this profile runs no model
                continue
            column = f"accuracy_w{widths[profile]:g}"
            time_ax.plot(result.rounds["sim_time_s"], 100 * result.rounds[column],
                         color=COLOURS[label], ls=styles[profile], lw=1.4,
                         label=f"{label}: {profile} (width {widths[profile]:g})")
    accuracy_axes(time_ax, "simulated time (s)", base.run.target_accuracy)
    time_ax.set_title("each profile's model against simulated time (seed 42)", fontsize=10)
    time_ax.legend(fontsize=7, frameon=False, loc="lower right")

    x = np.arange(len(PROFILES))
    step = 0.8 / len(STRATEGIES)
    for i, (label, _) in enumerate(STRATEGIES):
        rows = table[table["strategy"] == label].set_index("profile").reindex(PROFILES)
        bar_ax.bar(x + (i - 1) * step, 100 * rows["test_accuracy"].fillna(0), step,
                   yerr=100 * rows["test_accuracy_sd"].fillna(0), color=COLOURS[label],
                   label=label, capsize=2)
        for xi, width in zip(x + (i - 1) * step, rows["width"], strict=True):
            text = "no model" if width != width else f"w {width:g}"
            bar_ax.annotate(text, (xi, 2), ha="center", va="bottom", fontsize=7, rotation=90,
                            color="white" if width == width else "black")
    bar_ax.set_xticks(x, PROFILES)
    bar_ax.set_ylabel("final test accuracy of the profile's model (%)")
    bar_ax.set_ylim(0, 100)
    bar_ax.set_title(f"mean over {int(table['seeds'].max())} seeds (bars: +-1 sd)", fontsize=10)
    bar_ax.legend(fontsize=8, frameon=False, loc="upper left")
    bar_ax.grid(axis="y", color="#DDDDDD", lw=0.5)
    bar_ax.set_axisbelow(True)
    counts = fleet_counts(base)
    fig.suptitle(f"HeteroFL on 8x8 digits, non-IID ({counts}, {base.topology.edges} edges)",
                 fontsize=11)
    save_study_figure(fig, path)


def cli(argv: list[str] | None = None) -> None:
    """Parse OUT_DIR, --rounds and --seed, run the study, print its tables."""
    study_cli(NAME, __doc__, main, "cloud rounds per run (default: the scenario's 40)", argv,
              extra_tables=[f"{NAME}_runs.csv"])


if __name__ == "__main__":
    cli()
