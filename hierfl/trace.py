"""Columnar event recorder: every interval and instant of a run, in growing numpy columns."""

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
    """Append-only events; node and edge are indices into ``nodes`` (-1: none)."""

    def __init__(self, nodes: Sequence[str], capacity: int = 1024) -> None:
        self.nodes = list(nodes)
        self._rows = np.zeros(capacity, dtype=EVENT_DTYPE)
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
        if self._n == len(self._rows):
            self._rows = np.resize(self._rows, 2 * len(self._rows))
        self._rows[self._n] = (
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
        self._n += 1

    @property
    def rows(self) -> np.ndarray:
        """The recorded events as a structured array view (no copy)."""
        return self._rows[: self._n]

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the stored columns."""
        return COLUMNS

    def load(self, columns: dict[str, np.ndarray]) -> None:
        """Replace the events with ``columns`` (as saved from ``rows``), e.g. from a checkpoint."""
        n = len(columns["t_start"])
        self._rows = np.zeros(max(n, 1024), dtype=EVENT_DTYPE)
        for name in COLUMNS:
            self._rows[name][:n] = columns[name]
        self._n = n

    @property
    def nbytes_per_event(self) -> int:
        """Bytes of storage one event takes."""
        return EVENT_DTYPE.itemsize

    def to_frame(self) -> pd.DataFrame:
        """Events ordered by start time (ties in recording order); names as categoricals."""
        rows = self.rows[np.argsort(self.rows["t_start"], kind="stable")]
        names = pd.Index(self.nodes)
        return pd.DataFrame(
            {
                "t_start": rows["t_start"],
                "t_end": rows["t_end"],
                "kind": pd.Categorical.from_codes(rows["kind"].astype(np.int8), KINDS),
                "node": pd.Categorical.from_codes(rows["node"], names),
                "edge": pd.Categorical.from_codes(rows["edge"], names),
                "cloud_round": rows["cloud_round"],
                "edge_round": rows["edge_round"],
                "bytes": rows["bytes"],
                "energy_j": rows["energy_j"],
            }
        )
