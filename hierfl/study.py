"""What the study scripts in scenarios/studies share: figures, command line, and a check that
two runs selected the same devices (so that a comparison changes one thing only)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from hierfl.plots import new_figure
from hierfl.results import Result, atomic_write
from hierfl.scenario import Scenario, load_scenario

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

STUDY_DPI = 120


def study_scenario(
    path: Path, out_dir: str | Path, rounds: int | None, seed: int | None = None
) -> tuple[Path, Scenario]:
    """A study's output folder (made) and its scenario, with the ``--rounds`` and ``--seed``
    overrides of the study's command line applied."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    overrides = [] if seed is None else [f"seed={seed}"]
    overrides += [] if rounds is None else [f"run.cloud_rounds={rounds}"]
    return out, load_scenario(path, overrides)


def fleet_counts(scenario: Scenario) -> str:
    """The fleet in a few words, for a figure title: "10 mcu, 10 soc"."""
    return ", ".join(f"{group.count} {group.profile}" for group in scenario.devices)


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


def selected(result: Result) -> pd.DataFrame:
    """Who was selected: one row per device sent the model, ``(cloud_round, edge_round, node)``.

    A selected device is sent the model (a ``download`` event), whatever happens next.
    """
    events = result.events
    sent = events.loc[events["kind"].astype(str) == "download",
                      ["cloud_round", "edge_round", "node"]]
    return sent.assign(node=sent["node"].astype(str)).reset_index(drop=True)


def selection_differences(first: Result, second: Result) -> tuple[int, int]:
    """In how many edge rounds two runs selected different devices, and of how many.

    Selection is held fixed between two runs exactly when this is ``(0, n)``: then whatever
    differs between them did not come from who trained.
    """
    keys = ["cloud_round", "edge_round"]
    both = selected(first).merge(selected(second), how="outer", on=[*keys, "node"],
                                 indicator=True)
    rounds = both.groupby(keys)["_merge"].agg(lambda kept: bool((kept != "both").any()))
    return int(rounds.sum()), len(rounds)


def selection_note(results: Sequence[Result], labels: Sequence[str]) -> str:
    """One line saying whether every run selected the same devices as the first, round by round.

    >>> selection_note([], [])
    'selection: nothing to compare'
    """
    if len(results) < 2:
        return "selection: nothing to compare"
    notes = []
    for result, label in zip(results[1:], labels[1:], strict=True):
        differ, total = selection_differences(results[0], result)
        if differ:
            notes.append(f"{label} selected other devices than {labels[0]} in {differ} of "
                         f"{total} edge rounds")
    if not notes:
        return ("selection held fixed: every run selected the same devices in every edge "
                "round")
    return ("selection differs (differences may come from who trained, not only from what "
            "changed): " + "; ".join(notes))
