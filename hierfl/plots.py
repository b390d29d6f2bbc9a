"""Figures of a run: timeline (Gantt by device, grouped by edge), accuracy, energy and battery.

Headless and free of global state: each figure is a ``matplotlib.figure.Figure`` drawn by
the Agg canvas, never pyplot, so plotting is safe in threads, tests and sweeps. Every file is
written atomically (``hierfl.results.atomic_write``). Needs the ``plots`` extra
(``pip install 'hierfl[plots]'``).

Colours follow the Okabe-Ito palette (readable with colour-vision deficiencies) and are the
same in every figure: download / received is blue, compute orange, upload / sent green.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hierfl.chrome_trace import natural_key
from hierfl.errors import HierflError
from hierfl.results import Result, atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PHASE_COLOURS = {
    "download": "#0072B2",
    "compute": "#E69F00",
    "upload": "#009E73",
    "cloud_download": "#56B4E9",
    "edge_upload": "#CC79A7",
    "tail": "#BBBBBB",
    "late_upload": "#F0E442",
}
PHASE_LABELS = {
    "download": "download (device)",
    "compute": "compute (local training)",
    "upload": "upload (device)",
    "cloud_download": "cloud \u2192 edge model",
    "edge_upload": "edge \u2192 cloud model",
    "tail": "radio tail (after a transfer)",
    "late_upload": "late upload (not aggregated)",
}
MARKERS = {  # kind: (label, matplotlib marker style)
    "edge_aggregate": ("edge aggregation", {"marker": "D", "color": "black", "ms": 4}),
    "cloud_aggregate": ("cloud aggregation", {"marker": "*", "color": "black", "ms": 10}),
    "skip": ("skip (model does not fit)", {"marker": "x", "color": "#666666", "ms": 5}),
    "dropout": (
        "dropout (battery empty)",
        {"marker": "X", "color": "#D55E00", "ms": 8, "mec": "black", "mew": 0.5},
    ),
    "late": ("late update", {"marker": "v", "color": "white", "ms": 6, "mec": "black"}),
}
ENERGY_PARTS = {  # devices column: (label, colour)
    "energy_compute_j": ("compute", PHASE_COLOURS["compute"]),
    "energy_tx_j": ("transmit (upload)", PHASE_COLOURS["upload"]),
    "energy_rx_j": ("receive (download)", PHASE_COLOURS["download"]),
    "energy_idle_j": ("idle", "#DDDDDD"),
    "energy_tail_j": ("radio tail", "#999999"),
}
CHARGE_COLOUR = "#F0E442"  # Okabe-Ito yellow
OFFLINE_COLOUR = "#E0E0E0"
LINK_PANELS = 6  # the busiest shared links drawn in links.png
TIMELINE_ROUNDS = 5  # a run with more cloud rounds shows its first ones unless told a window
MIN_BATTERY_SPAN_PCT = 20.0  # the battery axis spans at least this many points, up to 100%
MAX_DEVICE_LANES = 60  # above this the timeline samples devices per edge
MAX_EDGE_GROUPS = 12  # above this the timeline samples edges
DPI = 150
PNG_COMPRESSION = 1  # zlib level: a fifth larger than level 6, written in much less time


def late_uploads(frame: pd.DataFrame) -> np.ndarray:
    """Mask of the uploads whose update came late: each ends at its device's ``late`` instant."""
    late = frame[frame["kind"] == "late"]
    keys = pd.MultiIndex.from_arrays([late["node"], late["t_start"]])
    ends = pd.MultiIndex.from_arrays([frame["node"], frame["t_end"]])
    return ((frame["kind"] == "upload") & ends.isin(keys)).to_numpy()


def plot_timeline(
    result: Result, path: str | Path, window_s: tuple[float | None, float | None] = (None, None)
) -> Path:
    """Gantt chart of every phase, one lane per device, grouped under its edge; write a PNG.

    Each group starts with its aggregator lane (the cloud, then each edge): the backhaul
    transfers and the aggregations. Thin dotted verticals mark cloud aggregations. Above
    ``MAX_DEVICE_LANES`` devices, each edge shows an evenly spaced sample of its devices in
    profile order (the title says how many); the legend counts dropouts and skips of the whole
    fleet. Bars have a hairline edge so that phases shorter than a pixel stay visible.

    ``window_s``: the simulated seconds (from, to) to draw; ``None`` ends default to the
    run's start and end, except that a run of more than ``TIMELINE_ROUNDS`` cloud rounds
    shows its first ``TIMELINE_ROUNDS`` (drawn whole, the phases would blur into a moire).
    """
    start_s, end_s, windowed = timeline_window(result, window_s)
    groups, sampled = timeline_lanes(result)
    lanes = [
        lane for name, devices in groups for lane in [(name, True)] + [(d, False) for d in devices]
    ]
    row = {name: i for i, (name, _) in enumerate(lanes)}
    events = result.events
    frame = _timeline_events(events, row, ["cloud_aggregate", *MARKERS])
    frame.loc[late_uploads(frame), "kind"] = "late_upload"
    inside = (frame["t_end"] >= start_s) & (frame["t_start"] <= end_s)
    frame = frame[inside]
    shown = frame[frame["node"].isin(row)]

    fig = new_figure(10.5, 1.8 + 0.16 * len(lanes))
    ax = fig.add_subplot()
    start = 0
    for index, (_, devices) in enumerate(groups):
        if index % 2:
            ax.axhspan(start - 0.5, start + len(devices) + 0.5, color="#F2F2F2", zorder=0)
        start += len(devices) + 1
    boundaries = frame.loc[frame["kind"] == "cloud_aggregate", "t_end"]
    ax.vlines(
        boundaries,
        0,
        1,
        transform=ax.get_xaxis_transform(),
        colors="#999999",
        lw=0.6,
        linestyles=":",
        zorder=1,
    )

    bars = shown[shown["kind"].isin(PHASE_COLOURS)]
    for kind, part in bars.groupby("kind", sort=False):
        _bars(ax, part, row, PHASE_COLOURS[kind])
    drawn = set(bars["kind"])
    handles = [_patch(c, PHASE_LABELS[k]) for k, c in PHASE_COLOURS.items() if k in drawn]
    handles += _availability_lanes(ax, frame, row, end_s)
    for kind, (label, style) in MARKERS.items():
        every = int((frame["kind"] == kind).sum())
        if not every:
            continue
        picked = shown[shown["kind"] == kind]
        ax.plot(picked["t_end"], picked["node"].map(row), ls="none", zorder=3, **style)
        shown_here = " shown" if windowed else ""
        count = f" \u00d7{every}{shown_here}" if kind in ("skip", "dropout", "late") else ""
        handles.append(_marker(style, label + count))

    relay = " (relay)" if _cloud_only(result) else ""
    ax.set_yticks(
        range(len(lanes)),
        [name + (relay if aggregator and name != "cloud" else "") for name, aggregator in lanes],
    )
    for tick, (_, aggregator) in zip(ax.get_yticklabels(), lanes, strict=True):
        tick.set_fontweight("bold" if aggregator else "normal")
        tick.set_fontsize(8 if len(lanes) <= 40 else 6)
    ax.set_ylim(len(lanes) - 0.5, -0.8)
    ax.set_xlim(start_s, start_s + max(end_s - start_s, 1e-9) * 1.02)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("devices, grouped by edge")
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="x", color="#DDDDDD", lw=0.5)
    ax.set_axisbelow(True)
    title = _timeline_title(result, groups, sampled)
    if windowed:
        title += "\n" + _window_note(result, start_s, end_s)
    ax.set_title(title, fontsize=10)
    if any(h.get_label().startswith("cloud aggregation") for h in handles):
        handles.append(_line(":", "#999999", "cloud round boundary"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    return _save(fig, path)


def _availability_lanes(
    ax: Any, frame: pd.DataFrame, row: dict[str, int], end_s: float
) -> list[Any]:
    """Offline spans (from each ``offline`` to the next ``online``, grey behind the lane) and
    charging stretches (a thin yellow strip at the lane's foot); their legend entries."""
    handles = []
    changes = frame[frame["kind"].isin(("offline", "online")) & frame["node"].isin(row)]
    spans = offline_spans(changes, end_s)
    for node, part in spans.groupby("node", sort=False):
        ax.broken_barh(np.column_stack([part["from_s"], part["to_s"] - part["from_s"]]),
                       (row[node] - 0.45, 0.9), facecolors=OFFLINE_COLOUR, edgecolors="none",
                       zorder=1)
    if len(spans):
        handles.append(_patch(OFFLINE_COLOUR, "offline"))
    charges = frame[(frame["kind"] == "charge") & frame["node"].isin(row)]
    for node, part in charges.groupby("node", sort=False):
        ax.broken_barh(np.column_stack([part["t_start"], part["t_end"] - part["t_start"]]),
                       (row[node] + 0.25, 0.15), facecolors=CHARGE_COLOUR, edgecolors="none",
                       zorder=2.5)
    if len(charges):
        handles.append(_patch(CHARGE_COLOUR, "charging (plugged in)"))
    return handles


def offline_spans(changes: pd.DataFrame, end_s: float) -> pd.DataFrame:
    """Each device's offline spans from its ``offline`` and ``online`` instants: from an
    offline to the next online, or to ``end_s``; a device first seen coming online was
    offline from 0.

    >>> changes = pd.DataFrame({"kind": ["online", "offline", "online", "offline"],
    ...                         "node": ["a", "a", "a", "b"], "t_start": [2.0, 5.0, 7.0, 3.0]})
    >>> offline_spans(changes, 10.0).values.tolist()
    [['a', 0.0, 2.0], ['a', 5.0, 7.0], ['b', 3.0, 10.0]]
    """
    rows = []
    for node, part in changes.sort_values("t_start", kind="stable").groupby("node", sort=True):
        offline_since: float | None = 0.0  # until its first change it may have been offline
        for kind, t_s in zip(part["kind"], part["t_start"], strict=True):
            if kind == "offline":
                offline_since = t_s
            elif offline_since is not None:
                rows.append((node, offline_since, t_s))
                offline_since = None
        if offline_since is not None and part["kind"].iloc[-1] == "offline":
            rows.append((node, offline_since, end_s))
    return pd.DataFrame(rows, columns=["node", "from_s", "to_s"])


def _timeline_events(events: pd.DataFrame, lanes: dict[str, int], kinds: list[str]) -> pd.DataFrame:
    """The events the timeline draws: those on its ``lanes`` and those of ``kinds``.

    Filtered on the categorical columns first, so a run of millions of events converts only
    the few hundred thousand drawn ones to plain strings.
    """
    keep = events["node"].isin(list(lanes)) | events["kind"].isin(kinds)
    picked = events.loc[keep.to_numpy(), ["kind", "node", "t_start", "t_end"]]
    return pd.DataFrame(
        {
            "kind": picked["kind"].astype(str).to_numpy(),
            "node": picked["node"].astype(str).to_numpy(),
            "t_start": picked["t_start"].to_numpy(float),
            "t_end": picked["t_end"].to_numpy(float),
        }
    )


def _bars(ax: Any, part: pd.DataFrame, row: dict[str, int], colour: str) -> None:
    """One phase's bars on every lane as a single collection (one artist, not one per lane).

    Bars have a hairline edge so that phases shorter than a pixel stay visible.
    """
    from matplotlib.collections import PolyCollection

    left, right = part["t_start"].to_numpy(), part["t_end"].to_numpy()
    y = part["node"].map(row).to_numpy(float)
    low, high = y - 0.35, y + 0.35
    corners = np.stack(
        [np.column_stack(c) for c in ((left, low), (left, high), (right, high), (right, low))],
        axis=1,
    )
    ax.add_collection(
        PolyCollection(corners, facecolors=colour, edgecolors=colour, linewidth=0.4, zorder=2)
    )


def timeline_window(
    result: Result, window_s: tuple[float | None, float | None] = (None, None)
) -> tuple[float, float, bool]:
    """The (from, to) seconds the timeline draws, and whether that is less than the run.

    >>> import pandas as pd
    >>> rounds = pd.DataFrame({"sim_time_s": [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]})
    >>> run = Result(pd.DataFrame(), rounds, pd.DataFrame(), {})
    >>> timeline_window(run), timeline_window(run, (3.0, None))
    ((0.0, 10.0, True), (3.0, 14.0, True))
    """
    rounds = result.rounds
    run_end = float(rounds["sim_time_s"].max()) if len(rounds) else 0.0
    start, end = window_s
    if start is None and end is None and len(rounds) > TIMELINE_ROUNDS:
        end = float(rounds["sim_time_s"].iloc[TIMELINE_ROUNDS - 1])
    start = 0.0 if start is None else float(start)
    end = run_end if end is None else float(end)
    if end <= start:
        raise HierflError(f"timeline window: --to must be > --from: {start:g} to {end:g} s")
    return start, end, start > 0 or end < run_end


def _window_note(result: Result, start_s: float, end_s: float) -> str:
    """Which part of the run a windowed timeline shows."""
    ends = result.rounds["sim_time_s"].to_numpy(float)
    inside = np.flatnonzero((ends > start_s) & (np.r_[0.0, ends[:-1]] < end_s))
    rounds = ""
    if len(inside):
        last = f"-{inside[-1]}" if inside[-1] > inside[0] else ""
        rounds = f", cloud_round {inside[0]}{last} of 0-{len(ends) - 1}"
    return (
        f"showing {start_s:.3g}-{end_s:.3g} s of {ends.max():.3g} s{rounds} "
        "(hierfl plot --from/--to for others)"
    )


def plot_accuracy(result: Result, path: str | Path) -> Path:
    """Test accuracy (%) vs simulated time (s) and vs cloud round, with the target; write a PNG.

    A timing-only run has no accuracy: both panels say so instead of drawing an empty line.
    """
    rounds = result.rounds
    target = result.summary.get("target_accuracy")
    finite = rounds[np.isfinite(rounds["accuracy"].astype(float))]
    fig = new_figure(10.5, 4.2)
    time_ax, round_ax = fig.subplots(1, 2, sharey=True)
    panels = [
        (
            time_ax,
            finite["sim_time_s"],
            "simulated time (s)",
            result.summary.get("time_to_target_s"),
            rounds["sim_time_s"].max(),
        ),
        (
            round_ax,
            finite["cloud_round"] + 1,
            "cloud rounds completed",
            result.summary.get("rounds_to_target"),
            len(rounds),
        ),
    ]
    for ax, x, label, reached, x_max in panels:
        ax.set_xlabel(label)
        ax.set_xlim(0, max(float(x_max), 1e-9) * 1.04)
        ax.set_ylim(0, 100)
        ax.grid(color="#DDDDDD", lw=0.5)
        if finite.empty:
            ax.text(
                0.5,
                0.5,
                "no accuracy: timing-only run",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=11,
                color="#444444",
            )
            continue
        ax.plot(
            x,
            100 * finite["accuracy"],
            marker="o",
            ms=3.5,
            lw=1.5,
            color="#0072B2",
            label="test accuracy of the global model",
        )
        if ax is time_ax and result.evaluations is not None:
            _timed_evaluations(ax, result.evaluations)
        if target is not None:
            ax.axhline(
                100 * target,
                color="#D55E00",
                ls="--",
                lw=1,
                label=f"target accuracy ({100 * target:.0f}%)",
            )
        if reached is not None:
            ax.axvline(reached, color="#D55E00", ls=":", lw=1, label=_reached_label(result))
    round_ax.xaxis.get_major_locator().set_params(integer=True)
    time_ax.set_ylabel("test accuracy (%)")
    fig.suptitle(f"{run_label(result)}: accuracy of the global model after each cloud round",
                 fontsize=11)
    if not finite.empty:
        handles, labels = time_ax.get_legend_handles_labels()
        fig.legend(
            handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8, frameon=False
        )
    return _save(fig, path)


def _timed_evaluations(ax: Any, evaluations: pd.DataFrame) -> None:
    """The evaluations of ``evaluations.csv`` (every eval_every_s and every round) as a step
    line: the global model's accuracy holds between aggregations."""
    rows = evaluations[np.isfinite(evaluations["accuracy"].astype(float))]
    rows = rows.sort_values("sim_time_s", kind="stable")
    ax.step(rows["sim_time_s"], 100 * rows["accuracy"], where="post", lw=1, color="#56B4E9",
            label="evaluations at fixed times (evaluations.csv)")


def plot_energy(result: Result, path: str | Path) -> Path:
    """Mean device energy per profile by phase (J), and mean battery (%) over time; write a PNG.

    Left: stacked bars of the mean joules one device of each profile spent on compute,
    transmit, receive and idle over the whole run (``devices`` table). Right: mean remaining
    battery of the battery-powered devices, 100% at time 0 and then at the end of each cloud
    round (``rounds.mean_battery``), with the instants devices ran empty.
    """
    devices = result.devices
    fig = new_figure(11, 4.4)
    bar_ax, battery_ax = fig.subplots(1, 2, width_ratios=(1, 1.4))
    handles = _energy_bars(bar_ax, devices)
    handles += _battery_line(battery_ax, result)
    mains_j = result.summary.get("infrastructure_energy_j")
    note = f" (edges and cloud, mains-powered: {joules(mains_j)}, not shown)" if mains_j else ""
    fig.suptitle(f"{run_label(result)}: device energy and battery{note}", fontsize=11)
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return _save(fig, path)


def plot_run(
    result: Result, out_dir: str | Path, window_s: tuple[float | None, float | None] = (None, None)
) -> list[Path]:
    """Write timeline.png, accuracy.png and energy.png into ``out_dir``; return their paths.

    A timing-only run (no accuracy in any round) gets no accuracy.png: there is nothing to
    draw. ``window_s`` is the timeline's (see ``plot_timeline``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_timeline(result, out / "timeline.png", window_s)]
    if has_accuracy(result):
        paths.append(plot_accuracy(result, out / "accuracy.png"))
    paths.append(plot_energy(result, out / "energy.png"))
    if result.link_load is not None and len(result.link_load):
        paths.append(plot_links(result, out / "links.png"))
    return paths


def plot_links(result: Result, path: str | Path) -> Path:
    """Utilisation of the busiest shared links (most bytes) over simulated time; a PNG.

    One panel per link, its load as a share of its capacity in each step of
    ``link_load.parquet``, 0 between steps; the title gives its totals from ``links.csv``.
    """
    load, links = result.link_load, result.links
    busiest = links[links["bytes"] > 0].nlargest(LINK_PANELS, "bytes")
    fig = new_figure(10, 1.6 * len(busiest) + 0.8)
    axes = np.atleast_1d(fig.subplots(len(busiest), 1, sharex=True, squeeze=False)[:, 0])
    end_s = float(result.rounds["sim_time_s"].iloc[-1])
    for ax, link in zip(axes, busiest.itertuples(), strict=True):
        steps = load[load["link"].astype(str) == link.link]
        start, stop = steps["t_start"].to_numpy(), steps["t_end"].to_numpy()
        used = 100 * steps["utilisation"].to_numpy()
        zero = np.zeros(len(used))
        times = np.column_stack([start, start, stop, stop]).ravel()
        values = np.column_stack([zero, used, used, zero]).ravel()
        ax.fill_between(times, values, color=PHASE_COLOURS[
            "upload" if link.direction == "up" else "download"], lw=0.6)
        ax.set_ylim(0, 105)
        ax.set_ylabel("used (%)")
        ax.set_title(f"{link.link}: {link.bandwidth_kbps:,.0f} kbps, {link.bytes:,} bytes in "
                     f"{link.flows:,} flows, busy {link.busy_s:.3g} s", fontsize=8, loc="left")
        ax.grid(color="#DDDDDD", lw=0.5)
    axes[-1].set_xlabel("simulated time (s)")
    axes[-1].set_xlim(0, end_s)
    fig.suptitle(f"{run_label(result)}: load of the {len(busiest)} busiest shared links")
    return _save(fig, path)


def has_accuracy(result: Result) -> bool:
    """Whether any cloud round measured an accuracy (not a timing-only run)."""
    return bool(np.isfinite(result.rounds["accuracy"].astype(float)).any())


def plot_compare(results: list[Result], labels: list[str], path: str | Path) -> Path:
    """Accuracy (%) of several runs vs simulated time (s) and vs device energy (J); write a PNG."""
    fig = new_figure(11, 4.4)
    time_ax, energy_ax = fig.subplots(1, 2, sharey=True)
    for result, label in zip(results, labels, strict=True):
        rounds = result.rounds
        finite = rounds[np.isfinite(rounds["accuracy"].astype(float))]
        energy_j = rounds["energy_j"].cumsum()[finite.index]
        time_ax.plot(
            finite["sim_time_s"], 100 * finite["accuracy"], marker="o", ms=3, lw=1.4, label=label
        )
        energy_ax.plot(energy_j, 100 * finite["accuracy"], marker="o", ms=3, lw=1.4)
    time_ax.set_xlabel("simulated time (s)")
    energy_ax.set_xlabel("device energy spent (J)")
    time_ax.set_ylabel("test accuracy (%)")
    for ax in (time_ax, energy_ax):
        ax.set_ylim(0, 100)
        ax.set_xlim(left=0)
        ax.grid(color="#DDDDDD", lw=0.5)
    fig.suptitle("accuracy against simulated time and against device energy", fontsize=11)
    handles, names = time_ax.get_legend_handles_labels()
    fig.legend(
        handles,
        names,
        loc="outside lower center",
        ncol=min(len(names), 4),
        fontsize=8,
        frameon=False,
    )
    return _save(fig, path)


def plot_sweep(table: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write sweep_accuracy.png (accuracy vs time per variant, seed band) and sweep_tradeoff.png.

    Both legends give each variant's devices trained per cloud round (``rounds.csv``):
    variants that train different numbers of devices differ for that reason too.
    """
    out = Path(out_dir)
    ok = table[table["status"] == "ok"]
    fig = new_figure(8, 4.6)
    ax = fig.subplots()
    trained: dict[str, float] = {}
    for variant, runs in ok.groupby("variant", sort=False):
        found = [out / name / "rounds.csv" for name in runs["run"]]
        rounds = [pd.read_csv(path) for path in found if path.is_file()]
        if not rounds:  # runs kept on other nodes' disks
            continue
        trained[variant] = float(np.mean([r["devices_trained"].mean() for r in rounds]))
        stacked = pd.concat(rounds).groupby("cloud_round")
        time_s = stacked["sim_time_s"].mean()
        accuracy = stacked["accuracy"]
        seeds = f"{len(rounds)} seed{'s' * (len(rounds) != 1)}"
        label = f"{variant} ({seeds}, {_per_round(trained[variant])})"
        (line,) = ax.plot(time_s, 100 * accuracy.mean(), lw=1.5, label=label)
        ax.fill_between(
            time_s, 100 * accuracy.min(), 100 * accuracy.max(), color=line.get_color(), alpha=0.2
        )
    ax.set(xlabel="simulated time (s), mean over seeds", ylabel="test accuracy (%)", ylim=(0, 100))
    ax.set_xlim(left=0)
    ax.grid(color="#DDDDDD", lw=0.5)
    ax.set_title("accuracy per variant: mean line, band from the seeds' min to max", fontsize=10)
    if not ok.empty:
        fig.legend(loc="outside lower center", ncol=1, fontsize=8, frameon=False)
    paths = [_save(fig, out / "sweep_accuracy.png")]
    paths.append(_save(tradeoff_figure(ok, trained), out / "sweep_tradeoff.png"))
    return paths


def _per_round(trained: float) -> str:
    return f"{trained:.3g} devices trained per cloud round"


def tradeoff_figure(ok: pd.DataFrame, trained: dict[str, float]) -> Figure:
    """Time and energy of each variant (mean, std over seeds), both axes from zero.

    From zero, so that a difference of 0.2 s between runs of 50 s looks as small as it is.
    """
    fig = new_figure(7.5, 4.8)
    ax = fig.subplots()
    means = ok.groupby("variant", sort=False)[["sim_time_s", "energy_j", "final_accuracy"]]
    stats = means.mean().join(means.std().fillna(0).add_suffix("_std"))
    for variant, row in stats.iterrows():
        accuracy = row["final_accuracy"]
        parts = [f"{100 * accuracy:.1f}% final accuracy"] if np.isfinite(accuracy) else []
        if variant in trained:
            parts.append(_per_round(trained[variant]))
        ax.errorbar(
            row["sim_time_s"],
            row["energy_j"],
            xerr=row["sim_time_s_std"],
            yerr=row["energy_j_std"],
            fmt="o",
            ms=6,
            capsize=3,
            label=f"{variant}: {', '.join(parts)}" if parts else str(variant),
        )
    ax.set(xlabel="simulated time of the run (s)", ylabel="device energy of the run (J)")
    right = (stats["sim_time_s"] + stats["sim_time_s_std"]).max() if len(stats) else 0.0
    top = (stats["energy_j"] + stats["energy_j_std"]).max() if len(stats) else 0.0
    ax.set_xlim(0, max(float(right), 1e-9) * 1.1)
    ax.set_ylim(0, max(float(top), 1e-9) * 1.1)
    ax.grid(color="#DDDDDD", lw=0.5)
    ax.set_title("time / energy / accuracy trade-off (mean and std over seeds; axes from 0)",
                 fontsize=10)
    if not stats.empty:
        fig.legend(loc="outside lower center", ncol=1, fontsize=8, frameon=False)
    return fig


def sample_evenly(items: list[Any], k: int) -> list[Any]:
    """``k`` items spread evenly over ``items`` (first and last included), in their order.

    >>> sample_evenly(list(range(10)), 4)
    [0, 3, 6, 9]
    """
    if k >= len(items):
        return list(items)
    if k <= 1:
        return list(items[:k])
    picks = np.round(np.linspace(0, len(items) - 1, k)).astype(int)
    return [items[i] for i in picks]


def timeline_lanes(result: Result) -> tuple[list[tuple[str, list[str]]], bool]:
    """The timeline's lanes: (aggregator, its devices) groups top to bottom, and whether sampled.

    The cloud comes first (with any devices directly below it), then the edges in natural
    order. Above ``MAX_DEVICE_LANES`` devices each group keeps an evenly spaced sample of its
    devices taken in profile order, so every profile of an edge shows; above
    ``MAX_EDGE_GROUPS`` edges, an evenly spaced sample of edges is shown.
    """
    devices = result.devices
    edge_code, edge_names = pd.factorize(devices["edge"].astype(object), sort=False)
    edge_names = [str(e) for e in edge_names]
    events = result.events
    edge_events = events["kind"].isin(["cloud_download", "edge_aggregate", "edge_upload"])
    edges = set(edge_names) | set(events.loc[edge_events.to_numpy(), "node"].astype(str))
    edges.discard("cloud")
    names = ["cloud", *sorted(edges, key=natural_key)]
    if len(names) > MAX_EDGE_GROUPS + 1:
        names = ["cloud", *sample_evenly(names[1:], MAX_EDGE_GROUPS)]
    code_of = {name: k for k, name in enumerate(edge_names)}
    members = {
        name: np.flatnonzero(edge_code == code_of[name]) if name in code_of else np.array([], int)
        for name in names
    }
    total = sum(len(m) for m in members.values())
    sampled = total > MAX_DEVICE_LANES or len(names) < len(edges) + 1
    quota = max(1, MAX_DEVICE_LANES // max(1, sum(1 for m in members.values() if len(m))))
    profile_code = pd.factorize(devices["profile"].astype(object), sort=True)[0]
    device_names = devices["device"]
    groups = []
    for name in names:
        rows = members[name]
        if total > MAX_DEVICE_LANES:
            ordered = rows[np.argsort(profile_code[rows], kind="stable")]
            rows = np.sort(np.asarray(sample_evenly(list(ordered), quota), dtype=np.int64))
        groups.append((name, [str(d) for d in device_names.iloc[rows]]))
    return groups, sampled


def _timeline_title(result: Result, groups: list[tuple[str, list[str]]], sampled: bool) -> str:
    devices = result.devices
    edges = devices.loc[devices["edge"].astype(str) != "cloud", "edge"].nunique()
    relay = " relay" if _cloud_only(result) else ""
    n_rounds = len(result.rounds)
    title = (
        f"{run_label(result)}: timeline of {len(devices)} devices, {edges}{relay} edge"
        f"{'s' * bool(edges != 1)}, {n_rounds} cloud round{'s' * bool(n_rounds != 1)}"
    )
    if sampled:
        shown = [lanes for group, lanes in groups if group != "cloud"]
        per_edge = max((len(lanes) for lanes in shown), default=0)
        of_edges = f" on {len(shown)} of the {edges} edges" if len(shown) < edges else ""
        title += (
            f"\nsampled: {sum(len(lanes) for _, lanes in groups)} of {len(devices)} "
            f"device lanes, up to {per_edge} per edge{of_edges}, "
            "evenly spaced in profile order"
        )
    return title


def run_label(result: Result) -> str:
    """The run's name, with the ``--set`` overrides it was run with (``summary.overrides``).

    >>> run_label(Result(None, None, None, {"name": "t", "overrides": ["seed=3"]}))
    't [seed=3]'
    """
    name = str(result.summary.get("name", "run"))
    overrides = result.summary.get("overrides") or []
    return f"{name} [{', '.join(overrides)}]" if overrides else name


def joules(value: float) -> str:
    """Energy for a label: digits grouped, no exponent.

    >>> joules(6960.4), joules(12.345), joules(0.4491), joules(0.0053), joules(1.23e-5)
    ('6,960 J', '12.3 J', '0.449 J', '5.3 mJ', '12.3 \u00b5J')
    """
    if value >= 100:
        return f"{value:,.0f} J"
    if value >= 0.01 or value <= 0:
        return f"{value:.3g} J"
    if value >= 1e-3:
        return f"{1e3 * value:.3g} mJ"
    return f"{1e6 * value:.3g} \u00b5J"


def _cloud_only(result: Result) -> bool:
    scenario = result.summary.get("scenario") or {}
    return (scenario.get("topology") or {}).get("mode") == "cloud_only"


def _reached_label(result: Result) -> str:
    summary = result.summary
    return (
        f"target first reached: {summary['time_to_target_s']:.3g} s, "
        f"{summary['rounds_to_target']} cloud rounds, "
        f"{joules(summary.get('energy_to_target_j') or 0)} of device energy"
    )


def _energy_bars(ax: Any, devices: pd.DataFrame) -> list[Any]:
    """Stacked mean energy per device of each profile; return the legend handles."""
    parts = [c for c in ENERGY_PARTS if c in devices] or ["energy_j"]  # older tables: total
    per_profile = devices.groupby("profile", sort=False)[parts].mean()
    counts = devices.groupby("profile", sort=False).size()
    x = np.arange(len(per_profile))
    bottom = np.zeros(len(per_profile))
    handles = []
    for column in parts:
        label, colour = ENERGY_PARTS.get(column, ("total", "#777777"))
        values = per_profile[column].to_numpy(dtype=float)
        ax.bar(x, values, 0.6, bottom=bottom, color=colour, edgecolor="white", lw=0.5)
        bottom += values
        handles.append(_patch(colour, f"energy: {label}"))
    for xi, total in zip(x, bottom, strict=True):
        ax.annotate(
            joules(total),
            (xi, total),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(
        x, [f"{p}\n({counts[p]} device{'s' * bool(counts[p] != 1)})" for p in per_profile.index]
    )
    ax.set_ylim(0, max(float(bottom.max()) if len(bottom) else 0.0, 1e-12) * 1.15)
    ax.set_ylabel("mean energy per device over the run (J)")
    ax.set_xlabel("device profile")
    split = parts != ["energy_j"]
    ax.set_title(
        "energy by phase" if split else "energy (table has no split by phase)", fontsize=10
    )
    ax.grid(axis="y", color="#DDDDDD", lw=0.5)
    ax.set_axisbelow(True)
    return handles


def _battery_line(ax: Any, result: Result) -> list[Any]:
    """Mean battery (%) at time 0 and after each cloud round, plus dropout instants."""
    rounds = result.rounds
    keep = np.isfinite(rounds["mean_battery"].astype(float))
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("mean battery of battery-powered devices (%)")
    ax.set_title("battery", fontsize=10)
    ax.grid(color="#DDDDDD", lw=0.5)
    ax.set_xlim(0, max(float(rounds["sim_time_s"].max()), 1e-9) * 1.04)
    if not keep.any():
        ax.text(
            0.5,
            0.5,
            "no battery-powered devices",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=11,
            color="#444444",
        )
        return []
    t = np.concatenate([[0.0], rounds.loc[keep, "sim_time_s"].to_numpy(float)])
    pct = np.concatenate([[100.0], 100 * rounds.loc[keep, "mean_battery"].to_numpy(float)])
    ax.plot(t, pct, marker="o", ms=3.5, lw=1.5, color="#0072B2")
    handles = [
        _line("-", "#0072B2", "mean battery at start and after each cloud round", marker="o")
    ]
    ax.set_ylim(*battery_limits(pct))
    ax.yaxis.get_major_formatter().set_useOffset(False)
    ax.annotate(f"{pct[-1]:.4g}% at the end", (t[-1], pct[-1]), xytext=(-4, -12),
                textcoords="offset points", ha="right", fontsize=8, color="#0072B2")
    drops = result.events.loc[(result.events["kind"] == "dropout").to_numpy(), "t_start"]
    if len(drops):
        style = MARKERS["dropout"][1]
        ax.plot(
            drops,
            np.full(len(drops), ax.get_ylim()[0]),
            ls="none",
            clip_on=False,
            zorder=3,
            **style,
        )
        handles.append(_marker(style, f"dropout (battery empty) \u00d7{len(drops)}"))
    return handles + _charging_strip(ax, result)


def _charging_strip(ax: Any, result: Result) -> list[Any]:
    """Stretches of charging as a yellow strip along the battery axis's foot, one row."""
    events = result.events
    charges = events[events["kind"].astype(str) == "charge"]
    if not len(charges):
        return []
    low, high = ax.get_ylim()
    height = 0.03 * (high - low)
    spans = merged_spans(charges["t_start"].to_numpy(float), charges["t_end"].to_numpy(float))
    ax.broken_barh(spans, (low, height), facecolors=CHARGE_COLOUR, edgecolors="none", zorder=2)
    stored_j = -float(charges["energy_j"].sum())
    return [_patch(CHARGE_COLOUR, f"some device charging ({joules(stored_j)} stored)")]


def merged_spans(start_s: np.ndarray, end_s: np.ndarray) -> np.ndarray:
    """(start, width) of the union of intervals, for ``broken_barh``.

    >>> merged_spans(np.array([0.0, 1.0, 5.0]), np.array([2.0, 3.0, 6.0])).tolist()
    [[0.0, 3.0], [5.0, 1.0]]
    """
    order = np.argsort(start_s, kind="stable")
    start_s, end_s = start_s[order], np.maximum.accumulate(end_s[order])
    new = np.r_[True, start_s[1:] > end_s[:-1]]
    last = np.r_[np.flatnonzero(new)[1:] - 1, len(start_s) - 1]
    return np.column_stack([start_s[new], end_s[last] - start_s[new]])


def battery_limits(pct: np.ndarray) -> tuple[float, float]:
    """Battery axis limits (%): at least ``MIN_BATTERY_SPAN_PCT`` points below 100, with room.

    >>> battery_limits(np.array([100.0, 99.88]))
    (80.0, 100.4)
    """
    low = float(np.min(pct))
    bottom = max(0.0, min(low - 0.08 * (100.0 - low), 100.0 - MIN_BATTERY_SPAN_PCT))
    return bottom, 100.0 + 0.02 * (100.0 - bottom)


def new_figure(width_in: float, height_in: float, dpi: int = DPI) -> Figure:
    """A headless Agg figure with constrained layout (no pyplot state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ModuleNotFoundError as error:
        raise HierflError(
            "plots need matplotlib: pip install 'hierfl[plots]' (or pip install matplotlib)"
        ) from error
    fig = Figure(figsize=(width_in, min(height_in, 60.0)), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG, atomically, at ``PNG_COMPRESSION``."""
    path = Path(path)
    atomic_write(path, lambda temp: fig.savefig(
        temp, format="png", dpi=DPI, pil_kwargs={"compress_level": PNG_COMPRESSION}))
    return path


def _patch(colour: str, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(facecolor=colour, edgecolor=colour, label=label)


def _marker(style: dict[str, Any], label: str) -> Any:
    return _line("none", style["color"], label, **{k: v for k, v in style.items() if k != "color"})


def _line(ls: str, colour: str, label: str, **style: Any) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], ls=ls, color=colour, label=label, **style)
