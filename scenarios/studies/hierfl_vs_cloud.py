"""Study: where does two-tier FedAvg reach a target accuracy sooner than cloud-only FedAvg?

Liu et al. 2020 ("Client-Edge-Cloud Hierarchical Federated Learning", ICC) claim that edge
aggregation, by saving costly trips over the wide-area backhaul, reaches a target accuracy in
less wall-clock time than cloud-only FedAvg. This script runs ``scenarios/hierfl_vs_cloud.toml``
(the tutorial066 mix of devices on 2 edges, each edge behind a shared Wi-Fi cell, a shared core
at the cloud, every device selected) as cloud-only FedAvg and as two-tier FedAvg with 4 edge
rounds per cloud round, over a grid of backhaul bandwidths x devices per edge, for 3 seeds.
Both sides of each comparison get the same fleet, the same seed and the same budget of 40 edge
rounds of device training. It writes ``hierfl_vs_cloud.png``, ``hierfl_vs_cloud.csv`` (one row
per run) and ``hierfl_vs_cloud_speedup.csv`` (one row per grid cell) into the output folder.

    python scenarios/studies/hierfl_vs_cloud.py [OUT_DIR] [--quick] [--rounds N] [--jobs J]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

import hierfl
from hierfl.results import Result, atomic_write, to_target
from hierfl.study import save_study_figure, study_figure

NAME = "hierfl_vs_cloud"
SCENARIO = Path(__file__).resolve().parents[1] / f"{NAME}.toml"
MIX = (("mcu", 7), ("soc", 7), ("mobile", 6))  # the tutorial066 shares of the fleet
TWO_TIER_EDGE_ROUNDS = 4
VARIANTS = (  # (label, topology.mode, run.edge_rounds)
    ("cloud-only", "cloud_only", 1),
    (f"two-tier, {TWO_TIER_EDGE_ROUNDS} edge rounds", "hierarchical", TWO_TIER_EDGE_ROUNDS),
)


class Grid(NamedTuple):
    """The study's axes and budget: backhaul bandwidths, devices per edge, seeds, edge rounds."""

    backhaul_kbps: tuple[float, ...]
    devices_per_edge: tuple[int, ...]
    seeds: tuple[int, ...]
    edge_rounds: int
    target_accuracy: float | None = None  # None: the scenario's


FULL = Grid((500, 1_000, 5_000, 20_000, 100_000), (5, 10, 20, 40), (42, 1, 2), 40)
QUICK = Grid((500, 100_000), (2, 6), (42, 1), 4, target_accuracy=0.3)  # a target 4 rounds reach
TICKS = (0.125, 0.25, 0.5, 0.8, 1, 1.25, 2, 4, 8)


def main(
    out_dir: str | Path = f"runs/studies/{NAME}",
    quick: bool = False,
    rounds: int | None = None,
    jobs: int = 1,
) -> pd.DataFrame:
    """Run every grid cell, seed and variant; write the figure and both tables; return the runs.

    ``quick`` runs the reduced grid the test suite uses; ``rounds`` overrides the budget of
    edge rounds per run (a multiple of 4 keeps both sides on the same budget); ``jobs > 1``
    runs that many grid cells at once in forked processes (from the command line only).
    """
    grid = QUICK if quick else FULL
    if rounds is not None:
        grid = grid._replace(edge_rounds=rounds)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = hierfl.load_scenario(SCENARIO)
    if grid.target_accuracy is not None:
        base = base.with_overrides([f"run.target_accuracy={grid.target_accuracy}"])
    tasks = [
        (base, grid.edge_rounds, kbps, per_edge, seed)
        for kbps in grid.backhaul_kbps
        for per_edge in grid.devices_per_edge
        for seed in grid.seeds
    ]
    if jobs > 1:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            pairs = list(pool.map(_pair, *zip(*tasks, strict=True)))
    else:
        pairs = [_pair(*task) for task in tasks]
    runs = pd.DataFrame([row for pair in pairs for row in pair])
    speedup = speedup_table(runs)
    atomic_write(out / f"{NAME}.csv", lambda p: runs.to_csv(p, index=False))
    atomic_write(out / f"{NAME}_speedup.csv", lambda p: speedup.to_csv(p, index=False))
    _plot(speedup, base, grid, out / f"{NAME}.png")
    return runs


def fleet(devices_per_edge: int, edges: int) -> str:
    """The ``devices`` TOML value: the tutorial066 mix over ``devices_per_edge * edges`` devices.

    Shares are rounded by largest remainders, so the counts add up exactly; a profile whose
    share rounds to none is left out.

    >>> fleet(1, 2)
    '[{ profile = "mcu", count = 1 }, { profile = "soc", count = 1 }]'
    """
    total = devices_per_edge * edges
    weight = sum(share for _, share in MIX)
    exact = [total * share / weight for _, share in MIX]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(MIX)), key=lambda i: counts[i] - exact[i])
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    groups = [
        f'{{ profile = "{p}", count = {c} }}' for (p, _), c in zip(MIX, counts, strict=True) if c
    ]
    return "[" + ", ".join(groups) + "]"


def _pair(base: hierfl.Scenario, budget: int, kbps: float, per_edge: int, seed: int) -> list[dict]:
    """Cloud-only and two-tier on one fleet, backhaul and seed: one row each."""
    results = []
    for _, mode, edge_rounds in VARIANTS:
        scenario = base.with_overrides(
            [
                f"seed={seed}",
                f"topology.mode={mode}",
                f"run.edge_rounds={edge_rounds}",
                f"run.cloud_rounds={max(1, budget // edge_rounds)}",
                f"topology.backhaul.bandwidth_kbps={kbps}",
                f"devices={fleet(per_edge, base.topology.edges)}",
            ]
        )
        results.append(hierfl.run(scenario))
    same = _same_devices(*results)
    return [
        _row(result, label, edge_rounds, kbps, per_edge, seed, same)
        for result, (label, _, edge_rounds) in zip(results, VARIANTS, strict=True)
    ]


def _same_devices(a: Result, b: Result) -> bool:
    """True when both runs had the same devices, edges and data, each trained as often."""
    columns = ["device", "profile", "edge", "samples", "rounds_trained"]
    mine, theirs = (r.devices[columns].reset_index(drop=True) for r in (a, b))
    return mine.equals(theirs)


def _row(
    result: Result,
    variant: str,
    edge_rounds: int,
    kbps: float,
    per_edge: int,
    seed: int,
    same_devices: bool,
) -> dict:
    """One run's figures: time per edge round, time and energy to target, backhaul bytes."""
    rounds = result.rounds
    reached = to_target(rounds, result.summary.get("target_accuracy"))
    cloud_rounds = len(rounds)
    to_goal = reached["rounds_to_target"]
    return {
        "backhaul_kbps": kbps,
        "devices_per_edge": per_edge,
        "seed": seed,
        "variant": variant,
        "edge_rounds": edge_rounds,
        "cloud_rounds": cloud_rounds,
        "same_devices": same_devices,
        "updates": int(rounds["devices_trained"].sum()),
        "s_per_edge_round": float(rounds["sim_time_s"].iloc[-1]) / (cloud_rounds * edge_rounds),
        "edge_rounds_to_target": math.nan if to_goal is None else to_goal * edge_rounds,
        "time_to_target_s": _nan(reached["time_to_target_s"]),
        "energy_to_target_j": _nan(reached["energy_to_target_j"]),
        "final_accuracy": float(rounds["accuracy"].iloc[-1]),
        "sim_time_s": float(rounds["sim_time_s"].iloc[-1]),
        "bytes_backhaul": int(rounds["bytes_backhaul"].sum()),
        "energy_j": float(rounds["energy_j"].sum()),
    }


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def speedup_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per grid cell: two-tier's speed-up over cloud-only (median, min, max over the seeds).

    ``speedup`` is cloud-only's time to target over two-tier's (above 1: the hierarchy wins);
    ``round_speedup`` the same ratio of seconds per edge round, which needs no target.
    Seeds where either side missed the target are left out of ``speedup`` and counted.
    """
    keys = ["backhaul_kbps", "devices_per_edge", "seed"]
    cloud, two = (runs[runs["variant"] == label].set_index(keys) for label, *_ in VARIANTS)
    ratio = pd.DataFrame(
        {
            "speedup": cloud["time_to_target_s"] / two["time_to_target_s"],
            "round_speedup": cloud["s_per_edge_round"] / two["s_per_edge_round"],
        }
    ).reset_index()
    cell = ratio.groupby(keys[:2])
    table = cell["speedup"].agg(["median", "min", "max", "count"]).add_prefix("speedup_")
    table = table.rename(columns={"speedup_count": "seeds_reached"})
    rounds = cell["round_speedup"].agg(["median", "min", "max"]).add_prefix("round_speedup_")
    table = table.join(rounds)
    table.insert(0, "seeds", cell.size())
    return table.reset_index()


def _plot(speedup: pd.DataFrame, base: hierfl.Scenario, grid: Grid, path: Path) -> None:
    """Two heatmaps: speed-up in time to target, and in seconds per edge round."""
    fig = study_figure(13, 5.6)
    axes = fig.subplots(1, 2)
    goal = f"{100 * base.run.target_accuracy:.0f}%"
    panels = (
        ("speedup", f"time to {goal} accuracy (learning + network)"),
        ("round_speedup", "seconds per edge round (network and compute only)"),
    )
    peak = max(
        _spread(speedup[f"{column}_{stat}"]) for column, _ in panels for stat in ("min", "max")
    )
    for ax, (column, title) in zip(axes, panels, strict=True):
        image = _heatmap(ax, speedup, column, peak, len(grid.seeds))
        ax.set_title(title, fontsize=10)
    bar = fig.colorbar(image, ax=axes, shrink=0.9, pad=0.02)
    ticks = [t for t in TICKS if 1 / peak <= t <= peak]
    bar.ax.minorticks_off()
    bar.set_ticks(ticks, labels=[f"{t:g}x" for t in ticks])
    bar.set_label("speed-up of two-tier over cloud-only (log scale)")
    cell, core = base.topology.cell, base.topology.core
    fig.suptitle(
        f"Speed-up of two-tier FedAvg ({TWO_TIER_EDGE_ROUNDS} edge rounds per cloud round) over "
        f"cloud-only FedAvg, both {grid.edge_rounds} edge rounds of training\n"
        f"{base.topology.edges} edges, each with a {cell.bandwidth_kbps / 1000:g} Mbit/s cell; "
        f"a {core.bandwidth_kbps / 1000:g} Mbit/s core at the cloud; cell text: median and "
        f"[min, max] over {len(grid.seeds)} seeds",
        fontsize=10,
    )
    save_study_figure(fig, path)


def _spread(values: pd.Series) -> float:
    """How far from 1 the ratios reach, as a factor (at least 1.05: the scale never collapses)."""
    finite = values.to_numpy(float)
    finite = finite[np.isfinite(finite) & (finite > 0)]
    if not len(finite):
        return 1.05
    return max(1.05, float(np.exp(np.abs(np.log(finite)).max())))


def _heatmap(ax, speedup: pd.DataFrame, column: str, peak: float, seeds: int):
    """One panel: colour = median ratio (1 is white), text = median and [min, max]."""
    from matplotlib.colors import LogNorm

    rows = sorted(speedup["backhaul_kbps"].unique())
    cols = sorted(speedup["devices_per_edge"].unique())
    table = speedup.set_index(["backhaul_kbps", "devices_per_edge"])
    median = table[f"{column}_median"].unstack().loc[rows, cols].to_numpy(float)
    image = ax.imshow(
        median, origin="lower", cmap="RdBu", norm=LogNorm(1 / peak, peak), aspect="auto"
    )
    for i, kbps in enumerate(rows):
        for j, per_edge in enumerate(cols):
            ax.text(
                j,
                i,
                _label(table.loc[(kbps, per_edge)], column, seeds),
                ha="center",
                va="center",
                fontsize=8,
                color=_ink(median[i, j], peak),
            )
    ax.set_xticks(range(len(cols)), [str(c) for c in cols])
    ax.set_yticks(range(len(rows)), [f"{kbps / 1000:g}" for kbps in rows])
    ax.set_xlabel("devices per edge (all selected every edge round)")
    ax.set_ylabel("backhaul bandwidth per edge (Mbit/s)")
    return image


def _label(cell: pd.Series, column: str, seeds: int) -> str:
    """'1.23x' over '[1.10, 1.31]'; how many seeds reached the target when not all did."""
    median = cell[f"{column}_median"]
    if not math.isfinite(median):
        return "target\nnot reached"
    text = f"{median:.2f}x\n[{cell[f'{column}_min']:.2f}, {cell[f'{column}_max']:.2f}]"
    if column == "speedup" and cell["seeds_reached"] < seeds:
        text += f"\n{int(cell['seeds_reached'])}/{seeds} seeds"
    return text


def _ink(value: float, peak: float) -> str:
    """White text on the saturated ends of the colour map, black elsewhere."""
    if not math.isfinite(value) or value <= 0:
        return "black"
    return "white" if abs(math.log(value)) > 0.6 * math.log(peak) else "black"


def cli(argv: list[str] | None = None) -> None:
    """Parse OUT_DIR, --quick and --rounds, run the study, print the speed-up table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=f"runs/studies/{NAME}")
    parser.add_argument("--quick", action="store_true", help="the test suite's reduced grid")
    parser.add_argument(
        "--rounds", type=int, default=None, help="edge rounds per run (default: 40; quick: 4)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="grid cells run at once (default: 1)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # the models are tiny: extra threads only contend
    main(args.out_dir, args.quick, args.rounds, args.jobs)
    out = Path(args.out_dir)
    with pd.option_context(
        "display.width", 250, "display.max_columns", None, "display.float_format", "{:.3g}".format
    ):
        print(pd.read_csv(out / f"{NAME}_speedup.csv").to_string(index=False))
    print(f"wrote {NAME}.png, {NAME}.csv, {NAME}_speedup.csv in {out}")


if __name__ == "__main__":
    cli()
