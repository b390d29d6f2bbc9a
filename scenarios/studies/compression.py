"""Study: what int8 quantization and magnitude pruning of updates buy on the tutorial fleet.

The seed tutorial (066, "FL and Edge AI") tabulates, without code that produces it: int8 4x
smaller with a 1-2% accuracy drop, 30% pruning 1.4x with 1-3%, both 5-6x with 2-4%. This
script runs ``scenarios/compression.toml`` (tutorial066 fleet, every device every round) with
each codec and measures the real encoded payload (``summary["model"]["uplink_payload_bytes"]``),
the bytes uploaded (devices and edges), the time and device energy to the target accuracy, and
the final accuracy. Updates travel as deltas; one more variant sends pruned int8 *weights*, as
the seed does. It writes ``compression.png`` and ``compression.csv`` into the output folder and
prints the table.

    python scenarios/studies/compression.py [OUT_DIR] [--rounds N] [--seed S]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import hierfl
from hierfl.results import atomic_write, compare_table
from hierfl.study import accuracy_axes, save_study_figure, study_cli, study_figure

NAME = "compression"
SCENARIO = Path(__file__).resolve().parents[1] / f"{NAME}.toml"
VARIANTS = [  # (label, quantize, prune_ratio, payload, the seed's claim: reduction, accuracy drop)
    ("none", "none", 0.0, "delta", "1x", "0%"),
    ("int8", "int8", 0.0, "delta", "4x", "1-2%"),
    ("prune 0.3", "none", 0.3, "delta", "1.4x", "1-3%"),
    ("int8 + prune 0.3", "int8", 0.3, "delta", "5-6x", "2-4%"),
    ("int8 + prune 0.3, weights (seed)", "int8", 0.3, "weights", "5-6x", "2-4%"),
]
COLOURS = ["#000000", "#0072B2", "#E69F00", "#009E73", "#D55E00"]  # Okabe-Ito


def main(
    out_dir: str | Path = f"runs/studies/{NAME}", rounds: int | None = None, seed: int | None = None
) -> pd.DataFrame:
    """Run every codec, write the figure and the CSV table; return the table.

    ``rounds`` overrides ``run.cloud_rounds`` and ``seed`` the scenario's seed. Bytes are real
    encoded lengths; times are simulated seconds; energy is device joules.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = hierfl.load_scenario(SCENARIO, [] if seed is None else [f"seed={seed}"])
    if rounds is not None:
        base = base.with_overrides([f"run.cloud_rounds={rounds}"])
    results = [
        hierfl.run(
            base.with_overrides(
                [
                    f"compression.quantize={quantize}",
                    f"compression.prune_ratio={prune}",
                    f"compression.payload={payload}",
                ]
            )
        )
        for _, quantize, prune, payload, _, _ in VARIANTS
    ]
    table = _table(results)
    atomic_write(out / f"{NAME}.csv", lambda p: table.to_csv(p, index=False))
    _plot(results, table, base.run.target_accuracy, out / f"{NAME}.png")
    return table


def _table(results: list) -> pd.DataFrame:
    labels = [v[0] for v in VARIANTS]
    table = compare_table(results, labels).rename(columns={"run": "variant"})
    to_target = ["time_to_target_s", "energy_to_target_j", "rounds_to_target"]
    table[to_target] = table[to_target].astype(float)  # None (not reached) -> NaN
    payload = np.array([r.summary["model"]["uplink_payload_bytes"] for r in results])
    table["payload"] = [v[3] for v in VARIANTS]
    table["uplink_payload_bytes"] = payload
    table["payload_reduction"] = payload[0] / payload
    table["bytes_up_reduction"] = table["bytes_up"].iloc[0] / table["bytes_up"]
    table["accuracy_drop_pp"] = 100 * (table["final_accuracy"].iloc[0] - table["final_accuracy"])
    table["seed_claim_reduction"] = [v[4] for v in VARIANTS]
    table["seed_claim_drop"] = [v[5] for v in VARIANTS]
    return table[
        [
            "variant",
            "payload",
            "uplink_payload_bytes",
            "payload_reduction",
            "seed_claim_reduction",
            "bytes_up",
            "bytes_up_reduction",
            "rounds_to_target",
            "time_to_target_s",
            "energy_to_target_j",
            "final_accuracy",
            "accuracy_drop_pp",
            "seed_claim_drop",
            "sim_time_s",
            "energy_j",
        ]
    ]


def _plot(results: list, table: pd.DataFrame, target: float | None, path: Path) -> None:
    """Payload per update (bars), accuracy vs simulated time and vs cloud round."""
    fig = study_figure(14, 4.8)
    bar_ax, time_ax, round_ax = fig.subplots(1, 3, width_ratios=(1.1, 1, 1))
    x = np.arange(len(table))
    kib = table["uplink_payload_bytes"].to_numpy(float) / 1024
    bar_ax.bar(x, kib, 0.65, color=COLOURS)
    for xi, value, measured, claim in zip(
        x, kib, table["payload_reduction"], table["seed_claim_reduction"], strict=True
    ):
        bar_ax.annotate(
            f"{value:.2f} KiB\n{measured:.2f}x\n(seed: {claim})",
            (xi, value),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7.5,
        )
    bar_ax.set_xticks(
        x, [v[0].replace(" + ", " +\n").replace(", ", ",\n") for v in VARIANTS], fontsize=7.5
    )
    bar_ax.set_ylim(0, kib.max() * 1.35)
    bar_ax.set_ylabel("encoded update per device (KiB)")
    bar_ax.set_xlabel("codec")
    bar_ax.set_title("uplink payload, and reduction vs none", fontsize=10)
    bar_ax.grid(axis="y", color="#DDDDDD", lw=0.5)
    bar_ax.set_axisbelow(True)
    for colour, result, (label, *_) in zip(COLOURS, results, VARIANTS, strict=True):
        rounds = result.rounds
        time_ax.plot(
            rounds["sim_time_s"],
            100 * rounds["accuracy"],
            color=colour,
            lw=1.4,
            marker="o",
            ms=2.5,
            label=label,
        )
        round_ax.plot(
            rounds["cloud_round"] + 1,
            100 * rounds["accuracy"],
            color=colour,
            lw=1.4,
            marker="o",
            ms=2.5,
        )
    for ax, label in ((time_ax, "simulated time (s)"), (round_ax, "cloud rounds completed")):
        accuracy_axes(ax, label, target)
        ax.set_xlim(left=0)
    time_ax.set_title("accuracy against simulated time", fontsize=10)
    round_ax.set_title("accuracy against cloud rounds", fontsize=10)
    handles, labels = time_ax.get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8.5, frameon=False
    )
    fig.suptitle(
        "Update compression on the tutorial066 fleet (20 devices, compact MLP, "
        "2 edges, all devices every round)",
        fontsize=11,
    )
    save_study_figure(fig, path)


def cli(argv: list[str] | None = None) -> None:
    """Parse OUT_DIR, --rounds and --seed, run the study, print its table."""
    study_cli(NAME, __doc__, main, "cloud rounds per variant (default: the scenario's 30)", argv)


if __name__ == "__main__":
    cli()
