"""Result of a run: events, rounds and devices tables plus a summary, and the run folder."""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hierfl.compression import Codec
from hierfl.errors import CorruptError, HierflError, OutputError
from hierfl.learn.data import FederatedData, data_shape
from hierfl.scenario import Scenario

UPLINK_KINDS = ("upload", "edge_upload")
BACKHAUL_KINDS = ("cloud_download", "edge_upload")
EVALUATION_COLUMNS = ("sim_time_s", "cloud_rounds_done", "trigger", "accuracy", "loss")
RUN_FILES = ("events.parquet", "rounds.csv", "devices.csv", "summary.json")
TEMP_SUFFIX = ".hierfl-tmp"
"""Ends the name of every temporary file ``atomic_write`` makes: a later run clears them."""


@dataclass(frozen=True)
class Result:
    """Tables of one run; every figure traces back to ``events`` and the cost formulas."""

    events: pd.DataFrame
    rounds: pd.DataFrame
    devices: pd.DataFrame
    summary: dict[str, Any]
    model: dict[str, torch.Tensor] | None = None
    links: pd.DataFrame | None = None
    link_load: pd.DataFrame | None = None
    evaluations: pd.DataFrame | None = None

    def write(self, out_dir: str | Path) -> Path:
        """Write the run folder of docs/outputs.md; each file appears whole or not at all.

        The final global model goes to ``model.pt`` (named tensors, ``torch.load``-able).
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if self.model is not None:
            tensors = {name: t.detach().clone() for name, t in self.model.items()}
            atomic_write(out / "model.pt", lambda p: save_torch(tensors, p))
        atomic_write(out / "events.parquet", lambda p: self.events.to_parquet(p, index=False))
        atomic_write(out / "rounds.csv", lambda p: self.rounds.to_csv(p, index=False))
        atomic_write(out / "devices.csv", lambda p: self.devices.to_csv(p, index=False))
        if self.links is not None:
            atomic_write(out / "links.csv", lambda p: self.links.to_csv(p, index=False))
        if self.link_load is not None:
            atomic_write(
                out / "link_load.parquet", lambda p: self.link_load.to_parquet(p, index=False)
            )
        if self.evaluations is not None:
            atomic_write(
                out / "evaluations.csv", lambda p: self.evaluations.to_csv(p, index=False)
            )
        text = json.dumps(_jsonable(self.summary), indent=2)
        atomic_write(out / "summary.json", lambda p: Path(p).write_text(text + "\n"))
        return out


def scenario_as_run(scenario: Scenario, codec: object, data: FederatedData | None) -> dict:
    """The resolved scenario as the run used it (summary.json's ``scenario``).

    Real data (every kind but synthetic and seed) records its own ``data.input_dim``
    (features per sample) and ``data.num_classes``. Settings the run ignored are left out:
    ``samples_per_device`` with LEAF data (femnist, shakespeare), ``class_sep`` beyond
    synthetic data, ``feature_shift`` beyond synthetic and seed, ``alpha`` beyond dirichlet,
    and the built-in codec's ``quantize``, ``prune_ratio``, ``cluster_bits`` and ``top_k``
    when your own codec encoded the updates (it is named in ``compression.codec``, as
    ``module:Class`` when it was passed from Python).
    """
    used = scenario.to_dict()
    cfg, section = scenario.data, used["data"]
    if cfg.kind not in ("synthetic", "seed"):
        shape, classes = (
            (data.input_shape, data.num_classes) if data is not None else data_shape(cfg)
        )
        section |= {"input_dim": math.prod(shape), "num_classes": classes}
    unused = {
        "samples_per_device": cfg.kind in ("femnist", "shakespeare"),
        "class_sep": cfg.kind != "synthetic",
        "feature_shift": cfg.kind not in ("synthetic", "seed"),
        "alpha": cfg.partition != "dirichlet",
    }
    for key in (key for key, drop in unused.items() if drop):
        del section[key]
    compression = used["compression"]
    if type(codec) is not Codec:
        compression.setdefault("codec", f"{type(codec).__module__}:{type(codec).__qualname__}")
    for key in ("quantize", "prune_ratio", "cluster_bits", "top_k"):
        value = getattr(codec, key) if isinstance(codec, Codec) else None
        if value is None:
            compression.pop(key, None)
        else:
            compression[key] = value
    return used


def compare_table(
    results: list[Result], labels: list[str], target: float | None = None
) -> pd.DataFrame:
    """One row per run: final figures and time/energy to ``target`` (each run's own if None)."""
    rows = []
    for result, label in zip(results, labels, strict=True):
        goal = target if target is not None else result.summary.get("target_accuracy")
        rounds = result.rounds
        rows.append(
            {
                "run": label,
                "final_accuracy": float(rounds["accuracy"].iloc[-1]),
                "sim_time_s": float(rounds["sim_time_s"].iloc[-1]),
                "energy_j": float(rounds["energy_j"].sum()),
                "bytes_up": int(rounds["bytes_up"].sum()),
                "target_accuracy": goal,
                **to_target(rounds, goal),
            }
        )
    return pd.DataFrame(rows)


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it into place.

    The temporary file is ``.NAME.RANDOM.hierfl-tmp``: a process killed mid-write leaves
    one behind, which the next run into the folder removes (``hierfl.rundir``). A system
    error (disk full, no permission) is an OutputError naming the path.
    """
    try:
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                        suffix=TEMP_SUFFIX)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    os.close(handle)
    try:
        write(temp)
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(temp, path)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def save_torch(value: object, path: str | Path) -> None:
    """``torch.save`` whose bytes depend on ``value`` alone, not on the file's name.

    Given a path, torch names the archive inside after the file (here a random temporary
    name); given an open file it names it ``archive``.
    """
    with open(path, "wb") as file:
        torch.save(value, file)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def rounds_table(
    rows: list[dict[str, Any]], events: pd.DataFrame, cloud_only: bool = False
) -> pd.DataFrame:
    """One row per cloud round, per-round figures from cumulative tallies and the events.

    ``bytes_backhaul`` counts what crossed the edges' backhauls, both ways: the edges'
    models in a hierarchy, every device's transfer in ``cloud_only`` (through its edge).
    """
    table = pd.DataFrame(rows)
    kind = events["kind"]
    crossed = kind.isin(BACKHAUL_KINDS)
    if cloud_only:
        crossed |= kind.isin(("download", "upload")) & events["edge"].notna()
    for column, rows_ in (("bytes_up", kind.isin(UPLINK_KINDS)), ("bytes_backhaul", crossed)):
        tally = events.loc[rows_, ["cloud_round", "bytes"]].groupby("cloud_round")["bytes"].sum()
        table[column] = table["cloud_round"].map(tally).fillna(0).astype("int64")
    trained = table["devices_trained"]
    table["devices_trained"] = trained.diff().fillna(trained).astype("int64")
    used_j = table.pop("energy_used_j")
    table["energy_j"] = used_j.diff().fillna(used_j)
    tiers = [column for column in table.columns if column.startswith("accuracy_w")]
    fates = update_fates(events)
    counts = ["updates_used", "updates_late", "edge_models_late"]
    for column in (*counts, "energy_wasted_j"):
        table[column] = table["cloud_round"].map(fates[column]).fillna(0)
    table[counts] = table[counts].astype("int64")
    return table[
        [
            "cloud_round",
            "sim_time_s",
            "accuracy",
            "loss",
            "devices_trained",
            "updates_used",
            "updates_late",
            "edge_models_late",
            "bytes_up",
            "bytes_backhaul",
            "energy_j",
            "energy_wasted_j",
            "mean_battery",
            *tiers,
        ]
    ]


WORK_KINDS = ("download", "compute", "upload")


def update_fates(events: pd.DataFrame) -> pd.DataFrame:
    """Per cloud round: device updates that arrived and were aggregated, updates that came
    ``late``, and the energy of work whose update was not aggregated (late, or lost to an
    empty battery): its download, compute and upload, and the radio tail that followed.

    A job is a device's work from one ``download`` to the next: the compute and upload that
    follow it belong to it, and its cloud round is the download's. A device's ``late``
    instant is the end of its job's upload. A tail piece belongs to the device's last job
    that ended before it began. An edge's own ``late`` (its model came to the cloud too late)
    is counted apart: ``edge_models_late``.
    """
    kind = events["kind"].astype(str)
    frame = events[["t_start", "t_end", "cloud_round", "bytes", "energy_j"]].assign(
        node=events["node"].cat.codes.to_numpy(), kind=kind.to_numpy(), at_edge=False)
    late_rows = events[kind.to_numpy() == "late"]  # few: compare names on these rows only
    frame.loc[late_rows.index, "at_edge"] = (
        late_rows["node"].astype(str).to_numpy() == late_rows["edge"].astype(str).to_numpy())
    starts = frame[frame["kind"] == "download"][["node", "t_start", "cloud_round"]]
    starts = starts.assign(job=np.arange(len(starts))).sort_values("t_start", kind="stable")

    def job_of(rows: pd.DataFrame) -> pd.DataFrame:
        """``rows`` with the job of the last download on their node that began by then."""
        found = pd.merge_asof(rows.sort_values("t_start", kind="stable"),
                              starts[["node", "t_start", "job"]], on="t_start", by="node")
        return found.dropna(subset=["job"]).astype({"job": "int64"})

    work = job_of(frame[frame["kind"].isin(WORK_KINDS)].drop(columns="cloud_round"))
    jobs = starts.set_index("job")[["cloud_round"]].sort_index()
    jobs["energy_j"] = work.groupby("job")["energy_j"].sum()
    jobs["end_s"] = work.groupby("job")["t_end"].max()
    arrived = work[(work["kind"] == "upload") & (work["bytes"] > 0)]
    jobs["arrived"] = jobs.index.isin(arrived["job"])
    late = frame[(frame["kind"] == "late") & ~frame["at_edge"]]
    came_late = pd.MultiIndex.from_arrays([late["node"], late["t_start"]])
    ends = pd.MultiIndex.from_arrays([arrived["node"], arrived["t_end"]])
    jobs["late"] = jobs.index.isin(arrived["job"][ends.isin(came_late)])
    jobs["node"] = starts.set_index("job")["node"]
    jobs = jobs.reset_index(drop=True)
    tails = frame.loc[frame["kind"] == "tail", ["node", "t_start", "energy_j"]]
    if len(tails) and len(jobs):
        owner = pd.merge_asof(
            tails.sort_values("t_start"),
            jobs[["node", "end_s"]].assign(job=jobs.index).sort_values("end_s"),
            left_on="t_start", right_on="end_s", by="node", direction="backward")
        extra = owner.dropna(subset=["job"]).groupby("job")["energy_j"].sum()
        jobs["energy_j"] += jobs.index.map(extra).fillna(0.0).to_numpy()
    wasted = jobs[~jobs["arrived"] | jobs["late"]]
    return pd.DataFrame({
        "updates_used": jobs[jobs["arrived"] & ~jobs["late"]].groupby("cloud_round").size(),
        "updates_late": jobs[jobs["late"]].groupby("cloud_round").size(),
        "energy_wasted_j": wasted.groupby("cloud_round")["energy_j"].sum(),
        "edge_models_late": frame[(frame["kind"] == "late") & frame["at_edge"]].groupby(
            "cloud_round").size(),
    })


def to_target(rounds: pd.DataFrame, target: float | None) -> dict[str, float | int | None]:
    """Simulated time, device energy and cloud round at which accuracy first reaches ``target``."""
    empty = {"time_to_target_s": None, "energy_to_target_j": None, "rounds_to_target": None}
    if target is None:
        return empty
    reached = rounds.index[rounds["accuracy"] >= target]
    if len(reached) == 0:
        return empty
    first = reached[0]
    return {
        "time_to_target_s": float(rounds.at[first, "sim_time_s"]),
        "energy_to_target_j": float(rounds.loc[:first, "energy_j"].sum()),
        "rounds_to_target": int(rounds.at[first, "cloud_round"]) + 1,
    }


def versions() -> dict[str, str]:
    """Versions of hierfl and the libraries that shape its numbers."""
    found = {}
    for name in ("hierfl", "torch", "simpy", "networkx", "numpy", "pandas"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "unknown"
    return found


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value


ROUND_COLUMNS = ("cloud_round", "sim_time_s", "accuracy", "loss", "devices_trained",
                 "bytes_up", "energy_j", "mean_battery")
EVENT_NUMBERS = ("t_start", "t_end", "cloud_round", "edge_round", "bytes", "energy_j")
DEVICE_COLUMNS = ("device", "profile", "edge", "energy_j", "battery", "rounds_trained",
                  "dropped")
SUMMARY_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "seed": (int,),
    "scenario": (dict,),
    "target_accuracy": (int, float, type(None)),
    "time_to_target_s": (int, float, type(None)),
    "energy_to_target_j": (int, float, type(None)),
    "rounds_to_target": (int, type(None)),
    "infrastructure_energy_j": (int, float, type(None)),
}


def read_result(folder: str | Path) -> Result:
    """Load a run folder written by ``Result.write``.

    A file that does not read back as hierfl wrote it is a CorruptError naming the file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise HierflError(f"{folder}: not a run folder (not a folder)")
    missing = [name for name in RUN_FILES if not (folder / name).is_file()]
    if missing:
        raise HierflError(f"{folder}: not a run folder (missing {', '.join(missing)})")
    model = folder / "model.pt"
    with _reading(folder / "events.parquet"):
        events = pd.read_parquet(folder / "events.parquet")
        _check_columns(events, EVENT_NUMBERS, ("kind", "node", "edge"))
    with _reading(folder / "rounds.csv"):
        rounds = pd.read_csv(folder / "rounds.csv")
        _check_columns(rounds, ROUND_COLUMNS, ())
    with _reading(folder / "devices.csv"):
        devices = pd.read_csv(folder / "devices.csv")
        _check_columns(devices, (), DEVICE_COLUMNS)
    with _reading(folder / "summary.json"):
        summary = _check_summary(json.loads((folder / "summary.json").read_text()))
    tensors = None
    if model.is_file():
        with _reading(model):
            tensors = _check_model(torch.load(io.BytesIO(model.read_bytes()), weights_only=True))
    links = load = None
    if (folder / "links.csv").is_file():
        with _reading(folder / "links.csv"):
            links = pd.read_csv(folder / "links.csv", keep_default_na=False)
            _check_columns(links, ("bytes", "utilisation_peak"), ("link",), rows=False)
    if (folder / "link_load.parquet").is_file():
        with _reading(folder / "link_load.parquet"):
            load = pd.read_parquet(folder / "link_load.parquet")
            _check_columns(load, ("t_start", "t_end", "utilisation"), ("link",), rows=False)
    evaluations = None
    if (folder / "evaluations.csv").is_file():
        with _reading(folder / "evaluations.csv"):
            evaluations = pd.read_csv(folder / "evaluations.csv")
            numbers = tuple(c for c in EVALUATION_COLUMNS if c != "trigger")
            _check_columns(evaluations, numbers, ("trigger",), rows=False)
    return Result(events, rounds, devices, summary, tensors, links, load, evaluations)


class _Unreadable(ValueError):
    """A run-folder file parsed, but not into what hierfl writes."""


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn any failure to read ``path`` back into one CorruptError line naming it."""
    try:
        yield
    except Exception as error:  # parquet, CSV, JSON and torch readers raise many kinds
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CorruptError(f"{path}: cannot read it back as hierfl wrote it: {reason}") from None


def _check_columns(
    table: pd.DataFrame, numbers: tuple[str, ...], others: tuple[str, ...], rows: bool = True
) -> None:
    """The columns hierfl's readers use are there, numbers are numeric, and (``rows``) rows
    exist."""
    missing = [name for name in (*numbers, *others) if name not in table.columns]
    if missing:
        raise _Unreadable(f"missing columns {', '.join(missing)}")
    if table.empty:
        if rows:
            raise _Unreadable("no rows")
        return  # an empty table's columns read as text: nothing to check
    text = [name for name in numbers if not pd.api.types.is_numeric_dtype(table[name])]
    if text:
        raise _Unreadable(f"columns {', '.join(text)} are not numbers")


def _check_summary(summary: object) -> dict[str, Any]:
    """A JSON object whose keys hierfl reads have the types it wrote."""
    if not isinstance(summary, dict):
        raise _Unreadable(f"not a JSON object: {type(summary).__name__}")
    for key, types in SUMMARY_TYPES.items():
        value = summary.get(key)
        if key in summary and (isinstance(value, bool) or not isinstance(value, types)):
            raise _Unreadable(f"{key} is {value!r}")
    return summary


def _check_model(tensors: object) -> dict[str, torch.Tensor]:
    """Named tensors, as ``Result.write`` saves them."""
    if not isinstance(tensors, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()
    ):
        raise _Unreadable("not a dict of named tensors")
    return tensors
