"""What the study scripts in scenarios/studies share: their figures and their command line."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from hierfl.plots import new_figure
from hierfl.results import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

STUDY_DPI = 120


def study_figure(width_in: float, height_in: float) -> Figure:
    """A headless figure at the studies' resolution."""
    return new_figure(width_in, height_in, dpi=STUDY_DPI)


def accuracy_axes(ax: Axes, xlabel: str, target: float | None) -> None:
    """Label an accuracy panel (0-100 %, grid) and draw the target line if there is one."""
    if target is not None:
        ax.axhline(
            100 * target,
            color="#999999",
            ls="--",
            lw=1,
            label=f"target accuracy ({100 * target:.0f}%)",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(color="#DDDDDD", lw=0.5)


def save_study_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG, atomically."""
    atomic_write(path, lambda temp: fig.savefig(temp, format="png", dpi=STUDY_DPI))
    return path


def study_cli(
    name: str,
    doc: str,
    main: Callable[[str, int | None, int | None], pd.DataFrame],
    rounds_help: str,
    argv: Sequence[str] | None = None,
    extra_tables: Sequence[str] = (),
) -> None:
    """Parse OUT_DIR, --rounds and --seed, run ``main``, print its table (and extra CSVs)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "out_dir",
        nargs="?",
        default=f"runs/studies/{name}",
        help="output folder (default: %(default)s)",
    )
    parser.add_argument("--rounds", type=int, default=None, help=rounds_help)
    parser.add_argument(
        "--seed", type=int, default=None, help="override the scenario seed (default: 42)"
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # the models are tiny: extra threads only contend
    table = main(args.out_dir, args.rounds, args.seed)
    out = Path(args.out_dir)
    with pd.option_context(
        "display.width", 250, "display.max_columns", None, "display.float_format", "{:.4g}".format
    ):
        print(table.to_string(index=False))
        for extra in extra_tables:
            print()
            print(pd.read_csv(out / extra).to_string(index=False))
    written = [f"{name}.png", f"{name}.csv", *extra_tables]
    print(f"wrote {', '.join(written)} in {out}")
