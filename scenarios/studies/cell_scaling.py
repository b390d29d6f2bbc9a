"""Study: round time and device energy as the devices behind one shared cell grow to 1,000.

Runs ``scenarios/cell_scaling.toml`` (one edge, a 100 Mbit/s cell, timing only) for the sourced
profiles ``esp32s3_wifi`` and ``rpi4`` (Wi-Fi boards) and ``phone_lte`` (LTE phones, whose radio
stays 11.6 s in a 1.06 W tail after each transfer), from 1 to 1,000 devices, in two regimes:
every device every round, and one device in ten per round. It writes ``cell_scaling.png`` and
``cell_scaling.csv`` (one row per profile, regime and fleet size) into the output folder.

    python scenarios/studies/cell_scaling.py [OUT_DIR] [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

import hierfl
from hierfl.results import Result, atomic_write
from hierfl.study import save_study_figure, study_figure

NAME = "cell_scaling"
SCENARIO = Path(__file__).resolve().parents[1] / f"{NAME}.toml"
PROFILES = (  # (profile, label, colour: Okabe-Ito)
    ("esp32s3_wifi", "ESP32-S3 on Wi-Fi (esp32s3_wifi)", "#0072B2"),
    ("rpi4", "Raspberry Pi 4 (rpi4)", "#009E73"),
    ("phone_lte", "LTE phone (phone_lte)", "#D55E00"),
)
REGIMES = (  # (label, selection.policy, selection.fraction, line style)
    ("every device, every round", "all", 1.0, "-"),
    ("one device in ten per round", "random", 0.1, "--"),
)
PARTS = ("radio_j", "tail_j", "compute_j", "idle_j")
EDGE_ROUNDS = 2  # rounds left out at each end: the first has no tails yet, the last cuts them


class Grid(NamedTuple):
    """Fleet sizes and cloud rounds per run."""

    devices: tuple[int, ...]
    rounds: int


FULL = Grid((1, 3, 10, 30, 100, 300, 1000), 30)
QUICK = Grid((1, 10, 40), 6)


def main(out_dir: str | Path = f"runs/studies/{NAME}", quick: bool = False) -> pd.DataFrame:
    """Run every profile, regime and fleet size; write the figure and the table; return it."""
    grid = QUICK if quick else FULL
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = hierfl.load_scenario(SCENARIO, [f"run.cloud_rounds={grid.rounds}"])
    rows = [
        _measure(_run(base, profile, policy, fraction, n), profile, regime, n)
        for profile, *_ in PROFILES
        for regime, policy, fraction, _ in REGIMES
        for n in grid.devices
    ]
    table = pd.DataFrame(rows)
    atomic_write(out / f"{NAME}.csv", lambda p: table.to_csv(p, index=False))
    _plot(table, base, out / f"{NAME}.png")
    return table


def _run(base: hierfl.Scenario, profile: str, policy: str, fraction: float, n: int) -> Result:
    """One timing-only run: ``n`` devices of ``profile`` behind the cell."""
    return hierfl.run(
        base.with_overrides(
            [
                f'devices=[{{ profile = "{profile}", count = {n} }}]',
                f"selection.policy={policy}",
                f"selection.fraction={fraction}",
            ]
        )
    )


def _measure(result: Result, profile: str, regime: str, n: int) -> dict:
    """Steady-state figures over the middle rounds: round time, energy per participation.

    Energy per participation is the devices' energy in those rounds over the updates they
    sent, split into radio (download and upload flows), tail, compute and the rest (idle).
    """
    rounds = result.rounds
    steady = rounds.iloc[EDGE_ROUNDS:-EDGE_ROUNDS]
    start_s = float(rounds["sim_time_s"].iloc[EDGE_ROUNDS - 1])
    end_s = float(steady["sim_time_s"].iloc[-1])
    updates = int(steady["devices_trained"].sum())
    energy_j = float(steady["energy_j"].sum())
    by_kind = _device_energy(result, start_s, end_s)
    parts = {
        "radio_j": by_kind.get("download", 0.0) + by_kind.get("upload", 0.0),
        "tail_j": by_kind.get("tail", 0.0),
        "compute_j": by_kind.get("compute", 0.0),
    }
    parts["idle_j"] = max(0.0, energy_j - sum(parts.values()))
    cell = result.links[result.links["kind"] == "cell"].set_index("direction")
    return {
        "profile": profile,
        "regime": regime,
        "devices": n,
        "updates_per_round": updates / len(steady),
        "round_s": (end_s - start_s) / len(steady),
        "energy_per_update_j": energy_j / updates,
        **{key: value / updates for key, value in parts.items()},
        "cell_up_utilisation": float(cell.at["up", "utilisation_mean"]),
        "cell_down_utilisation": float(cell.at["down", "utilisation_mean"]),
    }


def _device_energy(result: Result, start_s: float, end_s: float) -> dict[str, float]:
    """Joules by event kind of the devices' intervals inside [start_s, end_s), clipped to it."""
    events = result.events
    mine = events[events["node"].isin(result.devices["device"])]
    t_start, t_end = mine["t_start"].to_numpy(float), mine["t_end"].to_numpy(float)
    inside = np.clip(np.minimum(t_end, end_s) - np.maximum(t_start, start_s), 0, None)
    instant = (t_start >= start_s) & (t_start < end_s)  # what a zero-length event counts
    length = t_end - t_start
    share = np.divide(inside, length, out=instant.astype(float), where=length > 0)
    joules = mine["energy_j"].to_numpy(float) * share
    return pd.Series(joules).groupby(mine["kind"].to_numpy()).sum().to_dict()


def _plot(table: pd.DataFrame, base: hierfl.Scenario, path: Path) -> None:
    """Round time and energy per update against fleet size; the energy split at the largest."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = study_figure(13, 9.5)
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.1, 1])
    time_ax, energy_ax = top.subplots(1, 2)
    for profile, label, colour in PROFILES:
        for regime, *_, style in REGIMES:
            part = table[(table["profile"] == profile) & (table["regime"] == regime)]
            kwargs = {"color": colour, "ls": style, "marker": "o", "ms": 3}
            time_ax.plot(part["devices"], part["round_s"], label=f"{label}, {regime}", **kwargs)
            energy_ax.plot(part["devices"], part["energy_per_update_j"], **kwargs)
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for ax, ylabel in ((time_ax, "round time (s)"), (energy_ax, "device energy per update (J)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("devices behind the cell")
        ax.set_ylabel(ylabel)
        ax.grid(color="#DDDDDD", lw=0.5, which="both")
    time_ax.set_title("round time (steady state)", fontsize=10)
    energy_ax.set_title("device energy per update sent (download + train + upload)", fontsize=10)
    top.legend(
        *time_ax.get_legend_handles_labels(),
        loc="outside lower center",
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    _split(bottom.subplots(1, 1), table)
    cell = base.topology.cell
    fig.suptitle(
        f"One edge, one {cell.bandwidth_kbps / 1000:g} Mbit/s cell shared by all its devices; "
        f"the {base.model.name!r} MLP (69 KB of float32) sent dense both ways; timing only",
        fontsize=11,
    )
    save_study_figure(fig, path)


def _split(ax, table: pd.DataFrame) -> None:
    """100% stacked bars: where an update's energy goes, at the smallest and largest fleet."""
    sizes = (table["devices"].min(), table["devices"].max())
    colours = dict(zip(PARTS, ("#56B4E9", "#D55E00", "#F0E442", "#999999"), strict=True))
    labels = []
    for profile, _, _ in PROFILES:
        for regime, *_ in REGIMES:
            for n in sizes:
                row = table[
                    (table["profile"] == profile)
                    & (table["regime"] == regime)
                    & (table["devices"] == n)
                ].iloc[0]
                x, bottom = len(labels), 0.0
                for part in PARTS:
                    share = 100 * row[part] / row["energy_per_update_j"]
                    ax.bar(
                        x,
                        share,
                        bottom=bottom,
                        color=colours[part],
                        label=part.removesuffix("_j") if x == 0 else None,
                    )
                    bottom += share
                ax.annotate(
                    f"{row['energy_per_update_j']:.3g} J",
                    (x, 100),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    fontsize=7,
                )
                short = "all" if regime.startswith("every") else "1 in 10"
                labels.append(f"{profile}\n{short}\nn={n}")
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylim(0, 108)
    ax.set_ylabel("share of the energy per update (%)")
    ax.set_title(
        "where an update's energy goes (radio: the device's own download and upload "
        "flows; total above each bar)",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def cli(argv: list[str] | None = None) -> None:
    """Parse OUT_DIR and --quick, run the study, print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=f"runs/studies/{NAME}")
    parser.add_argument("--quick", action="store_true", help="the test suite's reduced grid")
    args = parser.parse_args(argv)
    table = main(args.out_dir, args.quick)
    with pd.option_context(
        "display.width", 250, "display.max_columns", None, "display.float_format", "{:.4g}".format
    ):
        print(table.to_string(index=False))
    print(f"wrote {NAME}.png, {NAME}.csv in {args.out_dir}")


if __name__ == "__main__":
    cli()
