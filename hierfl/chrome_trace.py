"""A run's events in the Chrome trace-event format, for Perfetto or chrome://tracing.

Layout: one process per edge (in edge order), one for the cloud (first) and, when some
devices hang directly below the cloud, one more for them (last). Each edge and the cloud
have an ``aggregator`` thread (tid 0); every device has its own thread below its edge.

- ``download``, ``compute``, ``upload`` are complete slices (``"ph": "X"``) on the device's
  thread; ``cloud_download``, ``edge_upload`` and ``edge_aggregate`` on its edge's aggregator
  thread; ``cloud_aggregate`` on the cloud's. Aggregations take no simulated time, so their
  slices have ``dur == 0``.
- ``skip``, ``dropout`` and ``late`` are thread-scoped instants (``"ph": "i", "s": "t"``).
- Battery: one counter (``"ph": "C"``) named ``mean battery`` on the cloud process, with the
  fleet's mean remaining battery in percent: 100 at time 0 (every battery starts full), then
  ``rounds.mean_battery`` at the end of each cloud round (``rounds.sim_time_s``). It is the
  simulator's own figure, idle drain included, sampled once a round; per-device battery
  between rounds is not in the tables, so it is not drawn.

Timestamps and durations are microseconds of simulated time (``ts = t_start * 1e6``);
``args`` carry ``cloud_round``, ``edge_round`` (absent when the event belongs to no edge
round), ``bytes`` and ``energy_j``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from hierfl.results import Result, atomic_write

US_PER_S = 1e6
INSTANT_KINDS = ("skip", "dropout", "late")
CATEGORY = {
    "cloud_download": "transfer",
    "download": "transfer",
    "upload": "transfer",
    "edge_upload": "transfer",
    "compute": "compute",
    "edge_aggregate": "aggregate",
    "cloud_aggregate": "aggregate",
    "skip": "fault",
    "dropout": "fault",
    "late": "fault",
}
CLOUD_PID = 1
AGGREGATOR_TID = 0
BATTERY_COUNTER = "mean battery"


def chrome_trace(result: Result) -> dict[str, Any]:
    """The trace-event JSON object of ``result`` (``traceEvents`` and ``displayTimeUnit``).

    Every value is finite, so ``json.dumps(..., allow_nan=False)`` accepts it.
    """
    tracks, metadata = _tracks(result)
    events = [*metadata, *_event_records(result.events, tracks), *_battery_counter(result)]
    summary = result.summary
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "name": str(summary.get("name", "")),
            "seed": summary.get("seed"),
            "time_unit": "simulated microseconds",
        },
    }


def write_chrome_trace(result: Result, path: str | Path) -> Path:
    """Write ``chrome_trace(result)`` as JSON to ``path`` (whole or not at all); return it."""
    path = Path(path)
    text = json.dumps(chrome_trace(result), separators=(",", ":"), allow_nan=False)
    atomic_write(path, lambda temp: Path(temp).write_text(text))
    return path


def natural_key(name: str) -> tuple:
    """Sort key that puts ``edge-2`` before ``edge-10``.

    >>> sorted(["edge-10", "edge-2"], key=natural_key)
    ['edge-2', 'edge-10']
    """
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _tracks(result: Result) -> tuple[dict[str, tuple[int, int]], list[dict[str, Any]]]:
    """Map every node to its (pid, tid) and build the naming and ordering metadata."""
    devices = result.devices
    device_edge = dict(zip(devices["device"].astype(str), devices["edge"].astype(str),
                           strict=True))
    edges = {e for e in device_edge.values() if e != "cloud"}
    events = result.events
    edge_kinds = events["kind"].astype(str).isin(["cloud_download", "edge_aggregate",
                                                  "edge_upload"])
    edges |= set(events.loc[edge_kinds, "node"].astype(str))
    processes = {"cloud": CLOUD_PID}
    for index, edge in enumerate(sorted(edges, key=natural_key)):
        processes[edge] = CLOUD_PID + 1 + index
    if "cloud" in device_edge.values():
        processes["devices under the cloud"] = CLOUD_PID + 1 + len(edges)

    tracks = {name: (pid, AGGREGATOR_TID) for name, pid in processes.items() if name in edges}
    tracks["cloud"] = (CLOUD_PID, AGGREGATOR_TID)
    threads: dict[int, list[str]] = {pid: [] for pid in processes.values()}
    for device, edge in device_edge.items():
        pid = processes["devices under the cloud" if edge == "cloud" else edge]
        threads[pid].append(device)
        tracks[device] = (pid, len(threads[pid]))
    for node in sorted(set(events["node"].astype(str)) - set(tracks), key=natural_key):
        threads[CLOUD_PID].append(node)  # a node no table names: keep it visible on the cloud
        tracks[node] = (CLOUD_PID, len(threads[CLOUD_PID]))

    metadata = []
    for sort_index, (name, pid) in enumerate(processes.items()):
        metadata += [_meta("process_name", pid, 0, {"name": name}),
                     _meta("process_sort_index", pid, 0, {"sort_index": sort_index})]
        if pid != processes.get("devices under the cloud"):
            metadata += [_meta("thread_name", pid, AGGREGATOR_TID, {"name": "aggregator"}),
                         _meta("thread_sort_index", pid, AGGREGATOR_TID, {"sort_index": 0})]
        for tid, thread in enumerate(threads[pid], start=1):
            metadata += [_meta("thread_name", pid, tid, {"name": thread}),
                         _meta("thread_sort_index", pid, tid, {"sort_index": tid})]
    return tracks, metadata


def _meta(name: str, pid: int, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "ts": 0, "args": args}


def _event_records(events: pd.DataFrame, tracks: dict[str, tuple[int, int]]) -> list[dict]:
    """One trace record per row of the events table, in the table's order."""
    columns = {name: events[name].tolist() for name in
               ("t_start", "t_end", "cloud_round", "edge_round", "bytes", "energy_j")}
    kinds = events["kind"].astype(str).tolist()
    nodes = events["node"].astype(str).tolist()
    records = []
    for i, (kind, node) in enumerate(zip(kinds, nodes, strict=True)):
        pid, tid = tracks[node]
        t_start, t_end = columns["t_start"][i], columns["t_end"][i]
        args: dict[str, Any] = {"cloud_round": int(columns["cloud_round"][i])}
        if columns["edge_round"][i] >= 0:
            args["edge_round"] = int(columns["edge_round"][i])
        args["bytes"] = int(columns["bytes"][i])
        args["energy_j"] = _finite(columns["energy_j"][i])
        record = {"name": kind, "cat": CATEGORY.get(kind, "other"), "pid": pid, "tid": tid,
                  "ts": t_start * US_PER_S, "args": args}
        if kind in INSTANT_KINDS:
            record.update(ph="i", s="t")
            if t_end > t_start:
                args["t_end_s"] = t_end
        else:
            record.update(ph="X", dur=max(0.0, (t_end - t_start) * US_PER_S))
        records.append(record)
    return records


def _battery_counter(result: Result) -> list[dict[str, Any]]:
    """Mean fleet battery (%) at time 0 and at the end of each cloud round."""
    rounds = result.rounds
    samples = [(0.0, 100.0)] + [
        (float(t), 100.0 * float(b))
        for t, b in zip(rounds["sim_time_s"], rounds["mean_battery"], strict=True)
        if math.isfinite(b)
    ]
    return [{"name": BATTERY_COUNTER, "ph": "C", "pid": CLOUD_PID, "tid": AGGREGATOR_TID,
             "ts": t * US_PER_S, "args": {"battery_pct": pct}} for t, pct in samples]


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
