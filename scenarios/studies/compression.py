"""Study: what compressing updates and models buys on the tutorial fleet.

The seed tutorial (066, "FL and Edge AI") tabulates, without code that produces it: int8 4x
smaller with a 1-2% accuracy drop, 30% pruning 1.4x with 1-3%, both 5-6x with 2-4%. This
script runs ``scenarios/compression.toml`` (tutorial066 fleet, every device every round) with
each codec: int8, pruning, both, weight clustering at 2, 4 and 6 bits (and 4 bits after
pruning), top-k 10% with and without error feedback, and an int8 downlink. It measures the
real encoded payloads (``summary["model"]["uplink_payload_bytes"]`` and
``downlink_payload_bytes``), the bytes moved, an mcu's download and upload seconds, the time
and device energy to the target accuracy, and the final accuracy. Updates travel as deltas;
one more variant sends pruned int8 *weights*, as the seed does. It writes ``compression.png``
and ``compression.csv`` into the output folder and prints the table.

    python scenarios/studies/compression.py [OUT_DIR] [--rounds N] [--seed S]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

import hierfl
from hierfl.results import atomic_write, compare_table
from hierfl.study import accuracy_axes, save_study_figure, study_cli, study_figure, study_scenario

NAME = "compression"
SCENARIO = Path(__file__).resolve().parents[1] / f"{NAME}.toml"
INT8_PRUNED = {"quantize": "int8", "prune_ratio": 0.3}
VARIANTS = [  # (label, [compression] settings, the seed's claim: reduction, accuracy drop)
    ("none", {}, "1x", "0%"),
    ("int8", {"quantize": "int8"}, "4x", "1-2%"),
    ("prune 0.3", {"prune_ratio": 0.3}, "1.4x", "1-3%"),
    ("int8 + prune 0.3", INT8_PRUNED, "5-6x", "2-4%"),
    ("int8 + prune 0.3, weights (seed)", {**INT8_PRUNED, "payload": "weights"}, "5-6x", "2-4%"),
    ("cluster 2 bits", {"cluster_bits": 2}, "", ""),
    ("cluster 4 bits", {"cluster_bits": 4}, "", ""),
    ("cluster 6 bits", {"cluster_bits": 6}, "", ""),
    ("cluster 4 bits + prune 0.3", {"cluster_bits": 4, "prune_ratio": 0.3}, "", ""),
    ("top-k 0.1", {"top_k": 0.1}, "", ""),
    ("top-k 0.1 + error feedback", {"top_k": 0.1, "error_feedback": True}, "", ""),
    ("int8 downlink", {"downlink": "int8"}, "", ""),
    ("int8 + prune 0.3, int8 downlink", {**INT8_PRUNED, "downlink": "int8"}, "", ""),
]
DEFAULTS = {"quantize": "none", "prune_ratio": 0.0, "payload": "delta"}  # the toml's differ
COLOURS = [  # Okabe-Ito; the variants after the eighth are drawn dashed
    "#000000", "#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442",
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9",
]


def main(
    out_dir: str | Path = f"runs/studies/{NAME}", rounds: int | None = None, seed: int | None = None
) -> pd.DataFrame:
    """Run every codec, write the figure and the CSV table; return the table.

    ``rounds`` overrides ``run.cloud_rounds`` and ``seed`` the scenario's seed. Bytes are real
    encoded lengths; times are simulated seconds; energy is device joules.
    """
    out, base = study_scenario(SCENARIO, out_dir, rounds, seed)
    results = [
        hierfl.run(base.with_overrides(
            [f"compression.{key}={json.dumps(value)}"
             for key, value in {**DEFAULTS, **settings}.items()]
        ))
        for _, settings, _, _ in VARIANTS
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
    table["payload"] = [settings.get("payload", "delta") for _, settings, _, _ in VARIANTS]
    table["uplink_payload_bytes"] = payload
    table["payload_reduction"] = payload[0] / payload
    table["downlink_payload_bytes"] = [r.summary["model"]["downlink_payload_bytes"]
                                       for r in results]
    table["bytes_up_reduction"] = table["bytes_up"].iloc[0] / table["bytes_up"]
    table["bytes_down"] = [int(_kinds(r, DOWNLOADS)["bytes"].sum()) for r in results]
    table["mcu_download_s"] = [_mcu_seconds(r, "download") for r in results]
    table["mcu_upload_s"] = [_mcu_seconds(r, "upload") for r in results]
    table["accuracy_drop_pp"] = 100 * (table["final_accuracy"].iloc[0] - table["final_accuracy"])
    table["seed_claim_reduction"] = [v[2] for v in VARIANTS]
    table["seed_claim_drop"] = [v[3] for v in VARIANTS]
    return table[
        [
            "variant",
            "payload",
            "uplink_payload_bytes",
            "payload_reduction",
            "seed_claim_reduction",
            "downlink_payload_bytes",
            "bytes_up",
            "bytes_up_reduction",
            "bytes_down",
            "mcu_download_s",
            "mcu_upload_s",
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


DOWNLOADS = ("download", "cloud_download")


def _kinds(result: hierfl.Result, kinds: tuple[str, ...]) -> pd.DataFrame:
    """The run's events of these kinds."""
    return result.events[result.events["kind"].isin(kinds)]


def _mcu_seconds(result: hierfl.Result, kind: str) -> float:
    """Mean seconds of one ``download`` or ``upload`` of an mcu (the slowest device)."""
    mcus = result.devices.loc[result.devices["profile"] == "mcu", "device"]
    rows = _kinds(result, (kind,))
    rows = rows[rows["node"].isin(mcus)]
    return float((rows["t_end"] - rows["t_start"]).mean())


def _plot(results: list, table: pd.DataFrame, target: float | None, path: Path) -> None:
    """Payload per update (bars), accuracy vs simulated time and vs cloud round."""
    fig = study_figure(16, 5.6)
    bar_ax, time_ax, round_ax = fig.subplots(1, 3, width_ratios=(1.1, 1, 1))
    x = np.arange(len(table))
    kib = table["uplink_payload_bytes"].to_numpy(float) / 1024
    bar_ax.bar(x, kib, 0.65, color=COLOURS)
    for xi, value, measured, claim in zip(
        x, kib, table["payload_reduction"], table["seed_claim_reduction"], strict=True
    ):
        bar_ax.annotate(
            f"{measured:.1f}x" + (f"\n({claim})" if claim else ""),
            (xi, value),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=6.5,
        )
    bar_ax.set_xticks(x, [v[0] for v in VARIANTS], fontsize=6.5, rotation=60, ha="right")
    bar_ax.set_ylim(0, kib.max() * 1.35)
    bar_ax.set_ylabel("encoded update per device (KiB)")
    bar_ax.set_xlabel("codec")
    bar_ax.set_title("uplink payload, reduction vs none (seed's claim)", fontsize=10)
    bar_ax.grid(axis="y", color="#DDDDDD", lw=0.5)
    bar_ax.set_axisbelow(True)
    for index, (colour, result, (label, *_)) in enumerate(
        zip(COLOURS, results, VARIANTS, strict=True)
    ):
        rounds = result.rounds
        style = {"color": colour, "lw": 1.2, "marker": "o", "ms": 2,
                 "ls": "-" if index < 8 else "--"}
        time_ax.plot(rounds["sim_time_s"], 100 * rounds["accuracy"], label=label, **style)
        round_ax.plot(rounds["cloud_round"] + 1, 100 * rounds["accuracy"], **style)
    for ax, label in ((time_ax, "simulated time (s)"), (round_ax, "cloud rounds completed")):
        accuracy_axes(ax, label, target)
        ax.set_xlim(left=0)
    time_ax.set_title("accuracy against simulated time", fontsize=10)
    round_ax.set_title("accuracy against cloud rounds", fontsize=10)
    handles, labels = time_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(
        "Compression on the tutorial066 fleet (20 devices, compact MLP, "
        "2 edges, all devices every round)",
        fontsize=11,
    )
    save_study_figure(fig, path)


def cli(argv: list[str] | None = None) -> None:
    """Parse OUT_DIR, --rounds and --seed, run the study, print its table."""
    study_cli(NAME, __doc__, main, "cloud rounds per variant (default: the scenario's 30)", argv)


if __name__ == "__main__":
    cli()
