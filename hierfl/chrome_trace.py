"""A run's events in the Chrome trace-event format, for Perfetto or chrome://tracing.

Layout: one process per edge (in edge order), one for the cloud (first) and, when some
devices hang directly below the cloud, one more for them (last). Each edge and the cloud
have an ``aggregator`` thread (tid 0); every device has its own thread below its edge.

- ``download``, ``compute``, ``upload`` are complete slices (``"ph": "X"``) on the device's
  thread; ``cloud_download``, ``edge_upload`` and ``edge_aggregate`` on its edge's aggregator
  thread; ``cloud_aggregate`` and ``distill`` on the cloud's. Aggregations take no simulated
  time, so their slices have ``dur == 0``.
- ``skip``, ``dropout``, ``late``, ``offline`` and ``online`` are thread-scoped instants
  (``"ph": "i", "s": "t"``); ``charge`` is a slice on the device's thread.
- Battery: one counter (``"ph": "C"``) named ``mean battery`` on the cloud process, with the
  fleet's mean remaining battery in percent: 100 at time 0 (every battery starts full), then
  ``rounds.mean_battery`` at the end of each cloud round (``rounds.sim_time_s``). It is the
  simulator's own figure, idle drain included, sampled once a round; per-device battery
  between rounds is not in the tables, so it is not drawn.

Timestamps and durations are microseconds of simulated time (``ts = t_start * 1e6``);
``args`` carry ``cloud_round``, ``edge_round`` (absent when the event belongs to no edge
round), ``bytes`` and ``energy_j``.

The file is streamed: records are formatted ``CHUNK_ROWS`` events at a time by Arrow's
column kernels and written as they are made, so writing holds one chunk of text, never the
whole trace. Each shared link has a counter of its utilisation (``_link_counters``); more
counter tracks go in through ``extra`` (see ``counter_records``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from io import StringIO
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from hierfl.results import Result, atomic_write
from hierfl.trace import KINDS

US_PER_S = 1e6
CHUNK_ROWS = 1 << 16
BYTES_PER_RECORD = 190  # a device event's record, about (measured 170-200)
TRACE_DEFAULT_EVENTS = 100_000  # hierfl run writes trace.json by default up to this many events
INSTANT_KINDS = ("skip", "dropout", "late", "offline", "online")
CATEGORY = {
    "cloud_download": "transfer",
    "download": "transfer",
    "upload": "transfer",
    "edge_upload": "transfer",
    "compute": "compute",
    "edge_aggregate": "aggregate",
    "cloud_aggregate": "aggregate",
    "distill": "aggregate",
    "skip": "fault",
    "dropout": "fault",
    "late": "fault",
    "offline": "availability",
    "online": "availability",
    "charge": "charge",
}
CLOUD_PID = 1
AGGREGATOR_TID = 0
BATTERY_COUNTER = "mean battery"
UNDER_CLOUD = "devices under the cloud"
_PLAIN_NAME = r"^[\w.+\-]*$"  # names JSON takes as they are (no quote, backslash, control)


def chrome_trace(result: Result) -> dict[str, Any]:
    """The trace-event JSON object of ``result`` (``traceEvents`` and ``displayTimeUnit``).

    What ``write_chrome_trace`` streams, read back into memory (for small runs and tests).
    Every value is finite.
    """
    text = StringIO()
    stream_chrome_trace(result, text)
    return json.loads(text.getvalue())


def write_chrome_trace(
    result: Result, path: str | Path, extra: Iterable[dict[str, Any]] = ()
) -> Path:
    """Stream the trace of ``result`` to ``path`` (whole or not at all); return the path.

    ``extra``: more trace records (e.g. ``counter_records``), written after the events.
    """
    path = Path(path)

    def write(temp: str) -> None:
        with open(temp, "w", encoding="utf-8") as out:
            stream_chrome_trace(result, out, extra)

    atomic_write(path, write)
    return path


def estimated_bytes(events: int) -> int:
    """About how large trace.json is for ``events`` events (``BYTES_PER_RECORD`` each)."""
    return events * BYTES_PER_RECORD


def stream_chrome_trace(
    result: Result, out: TextIO, extra: Iterable[dict[str, Any]] = ()
) -> None:
    """Write the trace JSON object to ``out``, one chunk of records at a time."""
    summary = result.summary
    other = {"name": str(summary.get("name", "")), "seed": summary.get("seed"),
             "time_unit": "simulated microseconds"}
    out.write('{"displayTimeUnit":"ms","otherData":' + json.dumps(other) + ',"traceEvents":[\n')
    tracks = Tracks.of(result)
    parts = [tracks.metadata(), _event_chunks(result.events, tracks),
             _dumped(_battery_counter(result)), _dumped(_link_counters(result, tracks)),
             _dumped(extra)]
    first = True
    for part in parts:
        for chunk in part:
            if chunk:
                out.write(chunk if first else ",\n" + chunk)
                first = False
    out.write("\n]}\n")


def counter_records(
    name: str, pid: int, times_s: Iterable[float], values: dict[str, Iterable[float]]
) -> Iterator[dict[str, Any]]:
    """Records of one counter track (``"ph": "C"``): at each time, one value per series.

    >>> list(counter_records("load", 1, [0.5], {"pct": [40.0]}))[0]["ts"]
    500000.0
    """
    columns = list(values)
    for t, *row in zip(times_s, *values.values(), strict=True):
        yield {"name": name, "ph": "C", "pid": pid, "tid": AGGREGATOR_TID, "ts": t * US_PER_S,
               "args": {key: float(v) for key, v in zip(columns, row, strict=True)}}


def natural_key(name: str) -> tuple:
    """Sort key that puts ``edge-2`` before ``edge-10``.

    >>> sorted(["edge-10", "edge-2"], key=natural_key)
    ['edge-2', 'edge-10']
    """
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


class Tracks:
    """Every node's (pid, tid), as columns indexed like the events' node categories."""

    def __init__(
        self, nodes: pd.Index, pid: np.ndarray, tid: np.ndarray, processes: dict[str, int]
    ) -> None:
        self.nodes, self.pid, self.tid, self.processes = nodes, pid, tid, processes

    @classmethod
    def of(cls, result: Result) -> Tracks:
        """Processes: the cloud, each edge (natural order), then devices under the cloud.

        Threads: the aggregator (tid 0) of the cloud and of each edge; one per device, in
        the devices table's order within its process; a node no table places goes on the
        cloud's process, after its devices.
        """
        events, devices = result.events, result.devices
        nodes = pd.Index(events["node"].cat.categories.astype(str))
        device_edge = pd.Series(devices["edge"].astype(str).to_numpy(),
                                index=devices["device"].astype(str).to_numpy())
        kinds = events["kind"].cat.categories.get_indexer(
            ["cloud_download", "edge_aggregate", "edge_upload"])
        at_edges = np.isin(events["kind"].cat.codes.to_numpy(), kinds[kinds >= 0])
        edge_codes = np.unique(events["node"].cat.codes.to_numpy()[at_edges])
        edge_nodes = nodes[edge_codes[edge_codes >= 0]]
        edges = (set(device_edge.unique()) | set(edge_nodes)) - {"cloud"}
        processes = {"cloud": CLOUD_PID}
        for index, edge in enumerate(sorted(edges, key=natural_key)):
            processes[edge] = CLOUD_PID + 1 + index
        if (device_edge == "cloud").any():
            processes[UNDER_CLOUD] = CLOUD_PID + 1 + len(edges)
        owner = device_edge.replace("cloud", UNDER_CLOUD)
        device_pid = owner.map(processes).to_numpy(np.int64)
        device_tid = pd.Series(device_pid).groupby(device_pid).cumcount().to_numpy() + 1
        pid = np.full(len(nodes), CLOUD_PID, dtype=np.int64)
        tid = np.full(len(nodes), -1, dtype=np.int64)
        at = nodes.get_indexer(device_edge.index)
        known = at >= 0
        pid[at[known]], tid[at[known]] = device_pid[known], device_tid[known]
        for name, number in processes.items():
            if name in nodes and name != UNDER_CLOUD:
                pid[nodes.get_loc(name)], tid[nodes.get_loc(name)] = number, AGGREGATOR_TID
        used = np.zeros(len(nodes), dtype=bool)
        used[np.unique(events["node"].cat.codes.to_numpy())] = True
        stray = np.flatnonzero(used & (tid < 0))  # no devices run on the cloud's process
        for k, i in enumerate(sorted(stray, key=lambda i: natural_key(nodes[i]))):
            tid[i] = 1 + k
        return cls(nodes, pid, tid, processes)

    def metadata(self) -> Iterator[str]:
        """Names and sort indexes of every process and thread, a chunk at a time."""
        records = []
        for sort_index, (name, pid) in enumerate(self.processes.items()):
            records += [_meta("process_name", pid, 0, {"name": name}),
                        _meta("process_sort_index", pid, 0, {"sort_index": sort_index})]
            if name != UNDER_CLOUD:
                records += [
                    _meta("thread_name", pid, AGGREGATOR_TID, {"name": "aggregator"}),
                    _meta("thread_sort_index", pid, AGGREGATOR_TID, {"sort_index": 0}),
                ]
        yield from _dumped(records)
        threads = np.flatnonzero(self.tid > 0)
        threads = threads[np.lexsort((self.tid[threads], self.pid[threads]))]
        for start in range(0, len(threads), CHUNK_ROWS):
            chosen = threads[start : start + CHUNK_ROWS]
            pid = _text(self.pid[chosen])
            tid = _text(self.tid[chosen])
            name = _json_strings(self.nodes[chosen])
            yield _joined(pc.binary_join_element_wise(
                '{"name":"thread_name","ph":"M","pid":', pid, ',"tid":', tid,
                ',"ts":0,"args":{"name":', name, '}},\n{"name":"thread_sort_index","ph":"M",',
                '"pid":', pid, ',"tid":', tid, ',"ts":0,"args":{"sort_index":', tid, "}}", "",
            ))


def _meta(name: str, pid: int, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "ts": 0, "args": args}


def _event_chunks(events: pd.DataFrame, tracks: Tracks) -> Iterator[str]:
    """One record per row of the events table, in the table's order, a chunk at a time."""
    heads = pa.array([_head(kind) for kind in KINDS])
    instant = np.array([kind in INSTANT_KINDS for kind in KINDS])
    kind_codes = events["kind"].cat.codes.to_numpy()
    kind_index = pd.Index(events["kind"].cat.categories.astype(str)).get_indexer(list(KINDS))
    to_kind = np.empty(len(KINDS), dtype=np.int64)  # events' category code -> KINDS index
    to_kind[kind_index[kind_index >= 0]] = np.flatnonzero(kind_index >= 0)
    node_codes = events["node"].cat.codes.to_numpy()
    for start in range(0, len(events), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        kind = to_kind[kind_codes[rows]]
        node = node_codes[rows]
        t_start = events["t_start"].to_numpy(float)[rows]
        t_end = events["t_end"].to_numpy(float)[rows]
        edge_round = events["edge_round"].to_numpy()[rows]
        energy_j = events["energy_j"].to_numpy(float)[rows]
        point = instant[kind]
        duration = np.maximum(0.0, (t_end - t_start) * US_PER_S)
        tail = pc.if_else(
            pa.array(point),
            pc.if_else(pa.array(point & (t_end > t_start)),
                       pc.binary_join_element_wise(',"t_end_s":', _text(t_end), "}}", ""),
                       "}}"),
            pc.binary_join_element_wise('},"dur":', _text(duration), "}", ""),
        )
        rounds = pc.if_else(
            pa.array(edge_round >= 0),
            pc.binary_join_element_wise(',"edge_round":', _text(edge_round), ""),
            "",
        )
        energy = pc.if_else(pa.array(np.isfinite(energy_j)), _text(energy_j), "null")
        record = pc.binary_join_element_wise(
            heads.take(pa.array(kind)),
            '"pid":', _text(tracks.pid[node]), ',"tid":', _text(tracks.tid[node]),
            ',"ts":', _text(t_start * US_PER_S),
            ',"args":{"cloud_round":', _text(events["cloud_round"].to_numpy()[rows]), rounds,
            ',"bytes":', _text(events["bytes"].to_numpy()[rows]), ',"energy_j":', energy, tail,
            "",
        )
        yield _joined(record)


def _head(kind: str) -> str:
    """The start of a record of ``kind``, up to its pid."""
    phase = '"ph":"i","s":"t",' if kind in INSTANT_KINDS else '"ph":"X",'
    return f'{{"name":"{kind}","cat":"{CATEGORY.get(kind, "other")}",{phase}'


def _text(values: np.ndarray) -> pa.Array:
    """Numbers as JSON text (Arrow's shortest round-trip form for floats).

    Each distinct value is formatted once: a run has few distinct times, sizes and rounds.
    """
    codes, uniques = pd.factorize(values)
    return pc.cast(pa.array(uniques), pa.string()).take(pa.array(codes))


def _json_strings(names: pd.Index) -> pa.Array:
    """Names as JSON string literals; escaped one by one only when some need it."""
    strings = pa.array(names.to_numpy(dtype=object), pa.string())
    if pc.all(pc.match_substring_regex(strings, _PLAIN_NAME)).as_py() is not False:
        return pc.binary_join_element_wise('"', strings, '"', "")
    return pa.array([json.dumps(name) for name in names], pa.string())


def _joined(records: pa.Array) -> str:
    """The records, one a line, as one string (read from Arrow's buffer in one piece)."""
    lines = pc.binary_join_element_wise(records, ",\n", "")
    _, offsets, data = lines.buffers()
    ends = np.frombuffer(offsets, dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    return data.to_pybytes()[ends[0] : ends[-1] - 2].decode("utf-8")


def _dumped(records: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Records written by ``json.dumps`` (small parts of the trace), one chunk."""
    text = ",\n".join(json.dumps(r, separators=(",", ":"), allow_nan=False) for r in records)
    yield text


def _link_counters(result: Result, tracks: Tracks) -> Iterator[dict[str, Any]]:
    """One counter per shared link, ``KIND DIRECTION used %`` on its edge's process (the
    core's, and those of edges without a process, on the cloud's): its load as a share of
    its capacity, from ``link_load.parquet``, dropping to 0 between steps."""
    if result.link_load is None or result.links is None:
        return
    load = result.link_load
    names = load["link"].astype(str).to_numpy()
    for link in result.links.itertuples():
        steps = load[names == link.link]
        if steps.empty:
            continue
        start, stop = steps["t_start"].to_numpy(), steps["t_end"].to_numpy()
        used = 100.0 * steps["utilisation"].to_numpy()
        gap = np.r_[start[1:] > stop[:-1], True]  # a step not followed at once: back to 0
        times = np.r_[start, stop[gap]]
        values = np.r_[used, np.zeros(int(gap.sum()))]
        order = np.argsort(times, kind="stable")
        pid = tracks.processes.get(str(link.edge), CLOUD_PID)
        yield from counter_records(f"{link.kind} {link.direction} used %", pid,
                                   times[order].tolist(), {"used_pct": values[order].tolist()})


def _battery_counter(result: Result) -> list[dict[str, Any]]:
    """Mean fleet battery (%) at time 0 and at the end of each cloud round."""
    rounds = result.rounds
    kept = [(float(t), 100.0 * float(b))
            for t, b in zip(rounds["sim_time_s"], rounds["mean_battery"], strict=True)
            if math.isfinite(b)]
    times = [0.0, *(t for t, _ in kept)]
    return list(counter_records(BATTERY_COUNTER, CLOUD_PID, times,
                                {"battery_pct": [100.0, *(b for _, b in kept)]}))
