"""Columnar event recorder: every interval and instant of a run, in numpy blocks of rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

KINDS = (
    "cloud_download",
    "download",
    "compute",
    "upload",
    "edge_aggregate",
    "edge_upload",
    "cloud_aggregate",
    "skip",
    "dropout",
    "late",
)
KIND = {name: code for code, name in enumerate(KINDS)}

EVENT_DTYPE = np.dtype(
    [
        ("t_start", "f8"),
        ("t_end", "f8"),
        ("kind", "u1"),
        ("node", "i4"),
        ("edge", "i4"),
        ("cloud_round", "i4"),
        ("edge_round", "i4"),
        ("bytes", "i8"),
        ("energy_j", "f8"),
    ]
)
COLUMNS = EVENT_DTYPE.names


class Trace:
    """Append-only events; node and edge are indices into ``nodes`` (-1: none).

    Rows go into blocks that are filled, never copied to grow: a new block holds at least a
    quarter of the events so far, so storage stays under 1.25 rows per event (plus one
    first block of ``capacity`` rows).
    """

    def __init__(self, nodes: Sequence[str], capacity: int = 1024) -> None:
        self.nodes = list(nodes)
        self._capacity = capacity
        self._full: list[np.ndarray] = []
        self._block = np.zeros(capacity, dtype=EVENT_DTYPE)
        self._fill = 0
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def record(
        self,
        kind: str,
        node: int,
        edge: int,
        t_start: float,
        t_end: float,
        cloud_round: int,
        edge_round: int = -1,
        nbytes: int = 0,
        energy_j: float = 0.0,
    ) -> None:
        """Append one event (an instant has ``t_start == t_end``)."""
        if self._fill == len(self._block):
            self._next_block(1)
        self._block[self._fill] = (
            t_start,
            t_end,
            KIND[kind],
            node,
            edge,
            cloud_round,
            edge_round,
            nbytes,
            energy_j,
        )
        self._fill += 1
        self._n += 1

    def extend(
        self,
        kind: str,
        node: np.ndarray | int,
        edge: np.ndarray | int,
        t_start: np.ndarray | float,
        t_end: np.ndarray | float,
        cloud_round: int,
        edge_round: int = -1,
        nbytes: np.ndarray | int = 0,
        energy_j: np.ndarray | float = 0.0,
    ) -> None:
        """Append events of one kind from columns (arrays of one length, or scalars for all)."""
        n = np.broadcast(node, edge, t_start, t_end, nbytes, energy_j).size
        values = (t_start, t_end, KIND[kind], node, edge, cloud_round, edge_round, nbytes,
                  energy_j)
        columns = [np.broadcast_to(v, (n,)) for v in values]
        done = 0
        while done < n:
            if self._fill == len(self._block):
                self._next_block(n - done)
            take = min(n - done, len(self._block) - self._fill)
            part = self._block[self._fill : self._fill + take]
            for name, column in zip(COLUMNS, columns, strict=True):
                part[name] = column[done : done + take]
            self._fill += take
            done += take
        self._n += n

    def _next_block(self, rows: int) -> None:
        """Seal the full block; open one for at least ``rows`` rows."""
        self._full.append(self._block)
        self._block = np.zeros(max(rows, self._n // 4, self._capacity), dtype=EVENT_DTYPE)
        self._fill = 0

    @property
    def nbytes(self) -> int:
        """Bytes of storage held, room for later events included."""
        return sum(block.nbytes for block in self._full) + self._block.nbytes

    @property
    def rows(self) -> np.ndarray:
        """The recorded events as one structured array (blocks are joined once, then a view)."""
        if self._full:
            self._block = np.concatenate([*self._full, self._block[: self._fill]])
            self._full, self._fill = [], self._n
        return self._block[: self._fill]

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the stored columns."""
        return COLUMNS

    def load(self, columns: dict[str, np.ndarray]) -> None:
        """Replace the events with ``columns`` (as saved from ``rows``), e.g. from a checkpoint."""
        n = len(columns["t_start"])
        self._full = []
        self._block = np.zeros(max(n, self._capacity), dtype=EVENT_DTYPE)
        for name in COLUMNS:
            self._block[name][:n] = columns[name]
        self._fill = self._n = n

    @property
    def nbytes_per_event(self) -> int:
        """Bytes of storage one event takes."""
        return EVENT_DTYPE.itemsize

    def to_frame(self) -> pd.DataFrame:
        """Events in one order whatever the order of recording; names as categoricals.

        Sorted by start time, then node, kind (in ``KINDS`` order), end time, cloud round
        and edge round; full ties (none in a simulation) keep their recording order.
        """
        rows = self.rows
        order = event_order(rows)
        names = pd.Index(self.nodes)

        def column(name: str) -> np.ndarray:
            return rows[name][order]

        return pd.DataFrame(
            {
                "t_start": column("t_start"),
                "t_end": column("t_end"),
                "kind": pd.Categorical.from_codes(column("kind").astype(np.int8), KINDS),
                "node": pd.Categorical.from_codes(column("node"), names),
                "edge": pd.Categorical.from_codes(column("edge"), names),
                "cloud_round": column("cloud_round"),
                "edge_round": column("edge_round"),
                "bytes": column("bytes"),
                "energy_j": column("energy_j"),
            }
        )


def event_order(rows: np.ndarray) -> np.ndarray:
    """Stable order of ``rows`` by (t_start, node, kind, t_end, cloud_round, edge_round).

    One sort of a single integer key (rank of t_start, node, kind), then a sort of the few
    rows that key leaves tied: much faster than sorting by six keys in turn.
    """
    starts = np.unique(rows["t_start"], return_inverse=True)[1].astype(np.int64)
    nodes = rows["node"].astype(np.int64) + 1  # -1 (none) sorts first
    span = int(nodes.max(initial=0)) + 1
    if (int(starts.max(initial=0)) + 1) * span * len(KINDS) >= 2**63:
        keys = ("edge_round", "cloud_round", "t_end", "kind", "node", "t_start")  # last first
        return np.lexsort([rows[key] for key in keys])
    key = (starts * span + nodes) * len(KINDS) + rows["kind"]
    order = np.argsort(key, kind="stable")
    tied = np.flatnonzero(key[order][1:] == key[order][:-1])
    if tied.size:
        slots = np.union1d(tied, tied + 1)  # positions in sorted order, ascending
        group = np.cumsum(np.r_[True, key[order[slots[1:]]] != key[order[slots[:-1]]]])
        chosen = order[slots]
        rest = [rows[name][chosen] for name in ("edge_round", "cloud_round", "t_end")]
        order[slots] = chosen[np.lexsort([*rest, group])]
    return order
