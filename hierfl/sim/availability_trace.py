"""Read an availability trace: a CSV of online intervals, checked row by row before use.

Columns ``device,start_s,end_s`` and optionally ``plugged`` (true/false or 1/0); one row per
online interval of a device named as in devices.csv. Devices without a row are never online.
Every cell is read as text and parsed here, so nothing in the file is ever evaluated, and
any bad cell is reported as one line naming the file, the row (1 is the first data row) and
the column.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from hierfl.errors import ScenarioError
from hierfl.sim.availability import Listed

COLUMNS = ("device", "start_s", "end_s")
OPTIONAL = ("plugged",)
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no", "")


def read_trace(path: str | Path, names: pd.Index) -> Listed:
    """The spans of ``path``, checked: known devices, finite times, ``0 <= start < end``, no
    two intervals of one device overlapping."""
    path = Path(path)
    table = _read(path)
    where = f"availability.path: {path}"
    device = names.get_indexer(table["device"])
    if (device < 0).any():
        row = int(np.flatnonzero(device < 0)[0])
        raise ScenarioError(
            f"{where}: row {row + 1}, column device: unknown device {table['device'][row]!r} "
            "(names as in devices.csv, e.g. mcu-0)"
        )
    start_s, end_s = (_seconds(table[column], column, where) for column in ("start_s", "end_s"))
    bad = np.flatnonzero(~(end_s > start_s))
    if len(bad):
        row = int(bad[0])
        raise ScenarioError(
            f"{where}: row {row + 1}, column end_s: must be > start_s ({start_s[row]!r}): "
            f"{end_s[row]!r}"
        )
    plugged = _flags(table.get("plugged"), len(device), where)
    order = np.lexsort((start_s, device))
    _no_overlap(device[order], start_s[order], end_s[order], order, where)
    offsets = np.searchsorted(device[order], np.arange(len(names) + 1))
    return Listed(offsets, start_s[order], end_s[order], plugged[order])


def _read(path: Path) -> dict[str, np.ndarray]:
    """The file's columns as text; its header must name the columns this module reads."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True,
                            quoting=csv.QUOTE_MINIMAL, engine="c")
    except FileNotFoundError:
        raise ScenarioError(f"availability.path: no such trace file: {path}") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ScenarioError(f"availability.path: {path}: not a readable CSV: {first}") from None
    header = [str(name).strip() for name in frame.columns]
    unknown = [name for name in header if name not in COLUMNS + OPTIONAL]
    missing = [name for name in COLUMNS if name not in header]
    if unknown or missing:
        raise ScenarioError(
            f"availability.path: {path}: the header must be device,start_s,end_s[,plugged]: "
            f"{','.join(header)}"
        )
    frame.columns = header
    return {name: frame[name].to_numpy(dtype=object) for name in header}


def _seconds(column: np.ndarray, name: str, where: str) -> np.ndarray:
    """A column of finite times >= 0, in seconds."""
    values = np.array([_number(text) for text in column], dtype=np.float64)
    bad = np.flatnonzero(~(np.isfinite(values) & (values >= 0)))
    if len(bad):
        row = int(bad[0])
        raise ScenarioError(
            f"{where}: row {row + 1}, column {name}: must be a finite number of seconds >= 0: "
            f"{column[row]!r}"
        )
    return values


def _number(text: str) -> float:
    """A decimal number as Python reads it exactly (NaN when it is none)."""
    try:
        return float(text)
    except ValueError:
        return np.nan


def _flags(column: np.ndarray | None, n: int, where: str) -> np.ndarray:
    """The ``plugged`` column as booleans (all False when the file has none)."""
    if column is None:
        return np.zeros(n, dtype=bool)
    text = np.char.lower(np.char.strip(column.astype(str)))
    known = np.isin(text, TRUE + FALSE)
    if not known.all():
        row = int(np.flatnonzero(~known)[0])
        raise ScenarioError(
            f"{where}: row {row + 1}, column plugged: must be true or false: {column[row]!r}"
        )
    return np.isin(text, TRUE)


def _no_overlap(
    device: np.ndarray, start_s: np.ndarray, end_s: np.ndarray, rows: np.ndarray, where: str
) -> None:
    """Two intervals of one device may touch but not overlap."""
    clash = np.flatnonzero((device[1:] == device[:-1]) & (start_s[1:] < end_s[:-1]))
    if len(clash):
        k = int(clash[0])
        raise ScenarioError(
            f"{where}: row {rows[k + 1] + 1}, column start_s: overlaps row {rows[k] + 1} of the "
            f"same device (which ends at {end_s[k]!r}): {start_s[k + 1]!r}"
        )
