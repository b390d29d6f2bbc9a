"""Cloud-round checkpoints: everything a run needs to continue exactly where it stopped.

At a cloud-round boundary the state is small and complete: the clock, the global model
(edges restart from it every cloud round), each aggregator's server-optimiser state
(momentum, moments), the error-feedback residuals of the senders, batteries, tallies and the
trace so far.
Training jobs and selection draws are seeded by (seed, round, device or edge), and data
and the initial model are rebuilt from the seed, so they need no saving.

The file is ``MAGIC``, then the state as ``torch.save`` writes it, then an HMAC of the
state's SHA-256 under the user's key (``hierfl.cache``), then a SHA-256 checksum over the
magic, the state's SHA-256 and the HMAC.
A checkpoint that was truncated, emptied or had one byte changed fails the checksum; one
whose numbers do not fit the scenario (shapes, ranges, a round beyond ``cloud_rounds``)
is refused when restored. Tensors are read with ``torch.load(weights_only=True)``, which
runs no code; but the scenario inside may name code (``package.module:Name``), which
resuming imports and runs. So a checkpoint that names code resumes only when its HMAC
shows that this user's own hierfl wrote it (its references are those the original
command line named), or when the caller allows code (``--allow-code``).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from hierfl.cache import sign, user_key, verify
from hierfl.errors import CorruptError, HierflError, ScenarioError
from hierfl.plugins import custom_references
from hierfl.results import atomic_write
from hierfl.scenario import Scenario, parse_scenario
from hierfl.sim.battery import STATE
from hierfl.sim.engine import Simulation

CHECKPOINT = "checkpoint.pt"
FORMAT = 7  # 5: residuals; 6: round history and utility, availability, evaluations, pacing;
# 7: late updates per device
MAGIC = b"HIERFLCK"
_HASH = 32
_BATTERY = STATE
_LINKS = ("carried_bytes", "flows")
_HISTORY = ("last_s", "total_s", "count", "utility")
_KEYS = ("format", "scenario", "next_round", "now_s", "global_weights", "battery", "trained",
         "late", "links", "link_steps", "trace", "round_rows", "optimizers", "residuals", "history",
         "reported_s", "evaluations", "round_started_s")


def save_checkpoint(sim: Simulation, folder: Path, next_round: int) -> Path:
    """Write the state after cloud round ``next_round - 1`` to ``folder/checkpoint.pt``."""
    state = {
        "format": FORMAT,
        "scenario": json.dumps(sim.scenario.to_dict()),
        "next_round": next_round,
        "now_s": float(sim.env.now),
        "global_weights": sim.global_weights,
        "battery": {name: torch.from_numpy(getattr(sim.battery, name).copy()) for name in _BATTERY},
        "trained": torch.from_numpy(sim.trained.copy()),
        "late": torch.from_numpy(sim.late.copy()),
        "links": {name: torch.from_numpy(getattr(sim.link_log, name).copy()) for name in _LINKS},
        "link_steps": [torch.from_numpy(rows.copy()) for rows in sim.link_log.steps],
        "trace": {
            name: torch.from_numpy(sim.trace.rows[name].copy()) for name in sim.trace.columns
        },
        "round_rows": [_plain(row) for row in sim.round_rows],
        "optimizers": {
            str(node): {name: value.clone() for name, value in opt.state_dict().items()}
            for node, opt in sim.optimizers.items()
        },
        "residuals": _residuals(sim),
        "history": {name: torch.from_numpy(getattr(sim.history, name).copy()) for name in _HISTORY},
        "reported_s": torch.from_numpy(sim.reported_s.copy()),
        "evaluations": [_plain(row) for row in sim.evaluations],
        "round_started_s": float(sim.round_started_s),
    }
    path = Path(folder) / CHECKPOINT
    write_state(state, path)
    return path


def _residuals(sim: Simulation) -> dict[str, torch.Tensor]:
    """Senders (trace nodes, ascending) and their error-feedback residuals, a row each."""
    nodes = sorted(sim.residuals)
    rows = [sim.residuals[node] for node in nodes]
    return {
        "nodes": torch.tensor(nodes, dtype=torch.int64),
        "values": torch.stack(rows) if rows else torch.zeros(0, sim.space.size),
    }


class _Hashing:
    """A write-only file that hashes what passes through it."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def write_state(state: dict[str, Any], path: Path) -> None:
    """Write a checkpoint's ``state`` to ``path`` atomically, sealed (see the module doc)."""
    atomic_write(path, lambda temp: _seal(state, temp))


def _seal(state: dict[str, Any], temp: str) -> None:
    """MAGIC, the state, the HMAC of the state's SHA-256, then the checksum."""
    with open(temp, "wb") as file:
        file.write(MAGIC)
        payload = _Hashing(file)
        torch.save(state, payload)  # to a file object: the archive is named "archive"
        digest = payload.sha.digest()
        mac = sign(digest, user_key())
        file.write(mac + _checksum(digest, mac))


def _checksum(digest: bytes, mac: bytes) -> bytes:
    """SHA-256 over MAGIC, the state's SHA-256 and the MAC: one pass over the state checks
    every byte of the file."""
    return hashlib.sha256(MAGIC + digest + mac).digest()


def load_checkpoint(folder: Path, allow_code: bool = False) -> dict[str, Any]:
    """The checkpoint of a run folder, checked whole.

    A clear error when there is none, when it is damaged, or when it names code
    (``package.module:Name``) and neither this user's hierfl wrote it nor ``allow_code``.
    """
    path = Path(folder) / CHECKPOINT
    if not path.is_file():
        raise HierflError(f"--resume {folder}: no {CHECKPOINT} (nothing to resume)")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise HierflError(
            f"--resume {folder}: cannot read {CHECKPOINT}: {error.strerror}"
        ) from None
    payload, signed = _unseal(data, path)
    state = _load(payload, path)
    scenario = _scenario(state, path)
    code = custom_references(scenario)
    if code and not signed and not allow_code:
        named = ", ".join(f"{key}={value!r}" for key, value in code.items())
        raise HierflError(
            f"--resume {folder}: its checkpoint names code to run ({named}) and was not "
            "written by your hierfl; resume with --allow-code if you trust that code"
        )
    return state


def _unseal(data: bytes, path: Path) -> tuple[bytes, bool]:
    """The state's bytes, and whether this user's key signed them; CorruptError otherwise."""
    if not data:
        raise CorruptError(f"{path}: empty file, not a checkpoint")
    if not data.startswith(MAGIC):
        raise CorruptError(f"{path}: not a hierfl checkpoint (format {FORMAT} expected)")
    if len(data) < len(MAGIC) + 2 * _HASH:
        raise CorruptError(f"{path}: truncated: {len(data)} bytes")
    payload = data[len(MAGIC) : -2 * _HASH]
    mac, checksum = data[-2 * _HASH : -_HASH], data[-_HASH:]
    digest = hashlib.sha256(payload).digest()
    if _checksum(digest, mac) != checksum:
        raise CorruptError(
            f"{path}: checksum mismatch: the file was damaged or cut short ({len(data)} bytes)"
        )
    return payload, verify(digest, mac, user_key())


def _load(payload: bytes, path: Path) -> dict[str, Any]:
    try:
        state = torch.load(io.BytesIO(payload), weights_only=True)
    except Exception as error:  # torch's readers raise many kinds on malformed archives
        raise CorruptError(f"{path}: cannot read its state: {_first_line(error)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CorruptError(f"{path}: checkpoint format {found!r} unknown ({FORMAT} expected)")
    missing = [key for key in _KEYS if key not in state]
    if missing:
        raise CorruptError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return state


def _scenario(state: dict[str, Any], path: Path) -> Scenario:
    """The checkpoint's scenario, with ``next_round`` and ``now_s`` in range for it."""
    scenario = checkpoint_scenario(state)
    rounds, now_s = state["next_round"], state["now_s"]
    if type(rounds) is not int or not 1 <= rounds <= scenario.run.cloud_rounds:
        raise CorruptError(
            f"{path}: next_round must be in [1, cloud_rounds = {scenario.run.cloud_rounds}]: "
            f"{rounds!r}"
        )
    if not isinstance(now_s, float) or not 0 <= now_s < float("inf"):
        raise CorruptError(f"{path}: now_s must be a finite time >= 0: {now_s!r}")
    return scenario


def checkpoint_scenario(state: dict[str, Any]) -> Scenario:
    """The resolved scenario a checkpoint was taken from."""
    try:
        raw = json.loads(state["scenario"])
    except (TypeError, ValueError) as error:
        raise CorruptError(f"checkpoint: scenario is not JSON: {_first_line(error)}") from None
    if not isinstance(raw, dict):
        raise CorruptError(f"checkpoint: scenario is not a table: {type(raw).__name__}")
    try:
        return parse_scenario(raw, origin="checkpoint")
    except ScenarioError as error:
        raise CorruptError(f"checkpoint: {error}") from None


def restore(sim: Simulation, state: dict[str, Any]) -> None:
    """Put a freshly prepared simulation into the checkpoint's state, checked against it."""
    _check_fits(sim, state)
    for name in _BATTERY:
        getattr(sim.battery, name)[...] = state["battery"][name].numpy()
    sim.trained[...] = state["trained"].numpy()
    sim.late[...] = state["late"].numpy()
    for name in _LINKS:
        getattr(sim.link_log, name)[...] = state["links"][name].numpy()
    sim.link_log.steps[:] = [rows.numpy() for rows in state["link_steps"]]
    sim.trace.load({name: column.numpy() for name, column in state["trace"].items()})
    sim.round_rows[:] = state["round_rows"]
    for name in _HISTORY:
        getattr(sim.history, name)[...] = state["history"][name].numpy()
    sim.reported_s[...] = state["reported_s"].numpy()
    sim.evaluations[:] = state["evaluations"]
    sim.round_started_s = state["round_started_s"]
    sim.global_weights = state["global_weights"]
    for node, opt in sim.optimizers.items():
        opt.load_state_dict(state["optimizers"][str(node)])
    residuals = state["residuals"]
    sim.residuals = dict(zip(residuals["nodes"].tolist(), residuals["values"], strict=True))
    sim.first_round = int(state["next_round"])
    sim.env = type(sim.env)(initial_time=state["now_s"])


def _check_fits(sim: Simulation, state: dict[str, Any]) -> None:
    """Every array has the shape and type the scenario gives it, and values in range."""
    battery = _table(state["battery"], "battery")
    for name in _BATTERY:
        _same_as(battery.get(name), getattr(sim.battery, name), f"battery.{name}")
    for name in ("remaining_j", "used_j"):
        values = battery[name].numpy()
        if not (np.isfinite(values) & (values >= 0)).all():
            raise CorruptError(f"checkpoint: battery.{name} must be finite and >= 0")
    _same_as(state["trained"], sim.trained, "trained")
    _same_as(state["late"], sim.late, "late")
    for key in ("trained", "late"):
        if (state[key].numpy() < 0).any():
            raise CorruptError(f"checkpoint: {key} counts must be >= 0")
    _check_links(state, sim)
    _check_trace(_table(state["trace"], "trace"), sim)
    _check_rows(state["round_rows"], state["next_round"], state["now_s"])
    _check_optimizers(_table(state["optimizers"], "optimizers"), sim)
    _check_pacing(state, sim)
    weights = state["global_weights"]
    if sim.global_weights is None:
        if weights is not None:
            raise CorruptError("checkpoint: global_weights given for a timing-only run")
    else:
        _same_as(weights, sim.global_weights.cpu(), "global_weights")
    _check_residuals(_table(state["residuals"], "residuals"), sim)


def _check_residuals(residuals: dict[str, torch.Tensor], sim: Simulation) -> None:
    """Residuals of distinct sender nodes, one finite float32 row of the model's size each."""
    nodes, values = residuals.get("nodes"), residuals.get("values")
    if not isinstance(nodes, torch.Tensor) or nodes.dtype != torch.int64 or nodes.ndim != 1:
        raise CorruptError("checkpoint: residuals.nodes must be a 1-d int64 tensor")
    _same_as(values, torch.zeros(len(nodes), sim.space.size), "residuals.values")
    senders = sim.device_node(len(sim.topo.names))  # nodes 1.. are edges, then devices
    if ((nodes < 1) | (nodes >= senders)).any() or len(nodes.unique()) != len(nodes):
        raise CorruptError(f"checkpoint: residuals.nodes must be distinct nodes in [1, {senders})")
    if not torch.isfinite(values).all():
        raise CorruptError("checkpoint: residuals.values must be finite")


def _check_optimizers(saved: dict[str, Any], sim: Simulation) -> None:
    """One state per aggregator, each with the tensors its fresh optimiser holds, finite."""
    if set(saved) != {str(node) for node in sim.optimizers}:
        raise CorruptError(
            f"checkpoint: optimizers must be nodes {', '.join(map(str, sim.optimizers))}"
        )
    for node, opt in sim.optimizers.items():
        state, fresh = _table(saved[str(node)], f"optimizers.{node}"), opt.state_dict()
        if set(state) != set(fresh):
            raise CorruptError(
                f"checkpoint: optimizers.{node} must hold {', '.join(fresh) or 'nothing'}"
            )
        for name, like in fresh.items():
            _same_as(state[name], like, f"optimizers.{node}.{name}")
            if not torch.isfinite(state[name]).all():
                raise CorruptError(f"checkpoint: optimizers.{node}.{name} must be finite")


def _table(value: object, key: str) -> dict[str, torch.Tensor]:
    if not isinstance(value, dict):
        raise CorruptError(f"checkpoint: {key} must be a table of tensors")
    return value


def _same_as(value: object, like: np.ndarray | torch.Tensor, key: str) -> None:
    """``value`` is a tensor with the shape and dtype of ``like``."""
    expected = like if isinstance(like, torch.Tensor) else torch.from_numpy(np.asarray(like))
    if not isinstance(value, torch.Tensor):
        raise CorruptError(f"checkpoint: {key} must be a tensor: {type(value).__name__}")
    if value.shape != expected.shape or value.dtype != expected.dtype:
        raise CorruptError(
            f"checkpoint: {key} must be {expected.dtype} of shape {tuple(expected.shape)}: "
            f"{value.dtype} of shape {tuple(value.shape)}"
        )


def _check_links(state: dict[str, Any], sim: Simulation) -> None:
    """Link totals shaped as the scenario's links; load steps on known links, in order."""
    links = _table(state["links"], "links")
    for name in _LINKS:
        _same_as(links.get(name), getattr(sim.link_log, name), f"links.{name}")
        if (links[name].numpy() < 0).any():
            raise CorruptError(f"checkpoint: links.{name} must be >= 0")
    steps = state["link_steps"]
    if not isinstance(steps, list) or not all(isinstance(s, torch.Tensor) for s in steps):
        raise CorruptError("checkpoint: link_steps must be a list of tensors")
    n_links = len(sim.links.names)
    for rows in (s.numpy() for s in steps):
        if rows.ndim != 2 or rows.shape[1] != 4 or rows.dtype != np.float64:
            raise CorruptError("checkpoint: link_steps must be float64 rows of 4")
        link, start, end, load = rows.T
        if not ((link >= 0) & (link < n_links) & (link == np.round(link))).all():
            raise CorruptError(f"checkpoint: link_steps name links outside [0, {n_links})")
        if not (np.isfinite(rows).all() and (start >= 0).all() and (end >= start).all()
                and (load > 0).all()):
            raise CorruptError("checkpoint: link_steps must be finite steps forward in time")


def _check_trace(trace: dict[str, torch.Tensor], sim: Simulation) -> None:
    """The trace's columns as the recorder stores them, one length, finite times >= 0."""
    if set(trace) != set(sim.trace.columns):
        raise CorruptError(f"checkpoint: trace columns must be {', '.join(sim.trace.columns)}")
    lengths = {len(column) for column in trace.values() if isinstance(column, torch.Tensor)}
    if len(lengths) != 1:
        raise CorruptError("checkpoint: trace columns must be tensors of one length")
    dtypes = sim.trace.rows.dtype
    for name, column in trace.items():
        if column.ndim != 1 or column.numpy().dtype != dtypes[name]:
            raise CorruptError(f"checkpoint: trace.{name} must be 1-d {dtypes[name]}")
    for name in ("t_start", "t_end"):
        times = trace[name].numpy()
        if not (np.isfinite(times) & (times >= 0)).all():
            raise CorruptError(f"checkpoint: trace.{name} must be finite and >= 0")


def _check_rows(rows: object, rounds: int, now_s: float) -> None:
    """One summary row per finished cloud round, in order, none after the clock."""
    if not isinstance(rows, list) or len(rows) != rounds:
        raise CorruptError(f"checkpoint: round_rows must hold {rounds} rows (one per round)")
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or row.get("cloud_round") != index:
            raise CorruptError(f"checkpoint: round_rows[{index}] must be cloud round {index}")
        time_s = row.get("sim_time_s")
        if not isinstance(time_s, float | int) or not 0 <= time_s <= now_s:
            raise CorruptError(
                f"checkpoint: round_rows[{index}].sim_time_s must be in [0, now_s = {now_s}]"
            )


def _check_pacing(state: dict[str, Any], sim: Simulation) -> None:
    """Round history and availability arrays shaped as the fleet; evaluations and the last
    round's start not after the clock."""
    history = _table(state["history"], "history")
    for name in _HISTORY:
        _same_as(history.get(name), getattr(sim.history, name), f"history.{name}")
    _same_as(state["reported_s"], sim.reported_s, "reported_s")
    now_s, started_s = state["now_s"], state["round_started_s"]
    if not isinstance(started_s, float) or not started_s <= now_s:
        raise CorruptError(f"checkpoint: round_started_s must be a time <= now_s: {started_s!r}")
    rows = state["evaluations"]
    if not isinstance(rows, list) or not all(
        isinstance(row, dict) and isinstance(row.get("sim_time_s"), float)
        and 0 <= row["sim_time_s"] <= now_s and row.get("trigger") in ("round", "interval")
        for row in rows
    ):
        raise CorruptError("checkpoint: evaluations must be rows timed in [0, now_s]")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """Numpy scalars as Python numbers, so the row loads under ``weights_only``."""
    return {key: value.item() if hasattr(value, "item") else value for key, value in row.items()}
