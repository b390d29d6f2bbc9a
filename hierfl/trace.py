"""Columnar event recorder: every interval and instant of a run, in numpy blocks of rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
    "tail",
    "nic_tx",
    "nic_rx",
    "idle",
    "distill",
    "offline",
    "online",
    "charge",
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
SORT_KEYS = ("t_start", "node", "kind", "t_end", "cloud_round", "edge_round")  # first first


class Trace:
    """Append-only events; node and edge are indices into ``nodes`` (-1: none).

    Rows go into blocks that are filled, never copied to grow: a new block holds at least a
    quarter of the events so far, so storage stays under 1.25 rows per event (plus one
    first block of ``capacity`` rows).
    """

    def __init__(self, nodes: Sequence[str], capacity: int = 1024) -> None:
        self.nodes = nodes if isinstance(nodes, pd.Index) else pd.Index(list(nodes))
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
        if self._fill + n > len(self._block):
            values = [np.broadcast_to(v, (n,)) for v in values]
        done = 0
        while done < n:
            if self._fill == len(self._block):
                self._next_block(n - done)
            take = min(n - done, len(self._block) - self._fill)
            part = self._block[self._fill : self._fill + take]
            for name, column in zip(COLUMNS, values, strict=True):
                part[name] = column if take == n else column[done : done + take]
            self._fill += take
            done += take
        self._n += n

    def extend_rows(self, rows: np.ndarray) -> None:
        """Append events given as rows of ``EVENT_DTYPE`` (another Trace's ``rows``)."""
        done = 0
        while done < len(rows):
            if self._fill == len(self._block):
                self._next_block(len(rows) - done)
            take = min(len(rows) - done, len(self._block) - self._fill)
            self._block[self._fill : self._fill + take] = rows[done : done + take]
            self._fill += take
            done += take
        self._n += len(rows)

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

    def to_frame(self) -> pd.DataFrame:
        """Events in one order whatever the order of recording; names as categoricals.

        Sorted by start time, then node, kind (in ``KINDS`` order), end time, cloud round
        and edge round; full ties (none in a simulation) keep their recording order.
        """
        blocks = [*self._full, self._block[: self._fill]]

        def column(name: str) -> np.ndarray:
            return np.concatenate([block[name] for block in blocks])

        keys = {name: column(name) for name in SORT_KEYS}
        order = event_order(keys)
        # one column at a time, each let go once sorted: the next one reuses its memory
        sorted_ = {name: (keys.pop(name) if name in keys else column(name))[order]
                   for name in COLUMNS}
        names = pd.CategoricalDtype(self.nodes)  # checked once, shared by two columns
        return pd.DataFrame(
            {
                "t_start": sorted_["t_start"],
                "t_end": sorted_["t_end"],
                "kind": pd.Categorical.from_codes(sorted_["kind"].astype(np.int8), KINDS),
                "node": pd.Categorical.from_codes(sorted_["node"], dtype=names),
                "edge": pd.Categorical.from_codes(sorted_["edge"], dtype=names),
                "cloud_round": sorted_["cloud_round"],
                "edge_round": sorted_["edge_round"],
                "bytes": sorted_["bytes"],
                "energy_j": sorted_["energy_j"],
            },
            copy=False,
        )


def event_order(rows: Mapping[str, np.ndarray]) -> np.ndarray:
    """Stable order of events (columns by name) by (t_start, node, kind, t_end, cloud_round,
    edge_round).

    One stable sort of an integer key (rank of t_start, node, kind), then of the few rows
    that key leaves tied: much faster than sorting by six keys in turn. The ranks come from
    hashing the start times (a run has few distinct ones), not from sorting them.
    """
    if len(rows["t_start"]) == 0:
        return np.arange(0)
    rank, starts = pd.factorize(rows["t_start"], sort=True, use_na_sentinel=False)
    span = int(rows["node"].max()) + 2  # node -1 (none) sorts first
    if len(starts) * span * len(KINDS) >= 2**63:
        return np.lexsort([rows[key] for key in reversed(SORT_KEYS)])
    key = rank.astype(np.int64, copy=False)  # built in place: no temporaries
    key *= span
    key += rows["node"]
    key += 1
    key *= len(KINDS)
    key += rows["kind"]
    order = np.argsort(key, kind="stable")
    key = key[order]
    tied = np.flatnonzero(key[1:] == key[:-1])
    if tied.size:
        slots = np.union1d(tied, tied + 1)  # positions in sorted order, ascending
        group = np.cumsum(np.r_[True, key[slots[1:]] != key[slots[:-1]]])
        chosen = order[slots]
        rest = [rows[name][chosen] for name in ("edge_round", "cloud_round", "t_end")]
        order[slots] = chosen[np.lexsort([*rest, group])]
    return order
