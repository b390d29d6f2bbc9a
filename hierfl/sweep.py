"""Grids of runs on a local process pool or Ray: one run folder per point, plus sweep.csv.

A point is a scenario file with ``--grid`` overrides and a seed. Points run independently
and deterministically, so the backend changes wall time, never results. Every run folder
is named after its overrides and a hash of its resolved scenario, so two points never share
a folder and an edited scenario never reuses an old result. A sweep folder that already
holds a finished run of the same scenario skips it; a run killed mid-way resumes from its
checkpoint; a failing run records its error and does not stop the others.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pandas as pd

from hierfl.checkpoint import CHECKPOINT
from hierfl.errors import HierflError, ScenarioError
from hierfl.results import atomic_write
from hierfl.scenario import (
    Scenario,
    anchor_paths,
    apply_overrides,
    parse_scenario,
    read_scenario_file,
)

RESULT_COLUMNS = (
    "final_accuracy",
    "sim_time_s",
    "energy_j",
    "bytes_up",
    "time_to_target_s",
    "energy_to_target_j",
    "devices_dropped",
)
ERROR_FILE = "error.txt"
POINT_FILE = "point.json"
"""Written into each run folder first: the point's overrides, seed and full scenario hash."""
HASH_CHARS = 12
"""Hex digits of the scenario hash in a folder name (48 bits)."""
READABLE_CHARS = 120
"""The readable part of a folder name is cut here: file names must stay under 255 bytes."""
SEED = "seed"


def scenario_hash(scenario: Scenario) -> str:
    """SHA-256 of the resolved scenario (defaults filled in, keys sorted), in hex."""
    text = json.dumps(scenario.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Point:
    """One run of a sweep: grid overrides, a seed, and the scenario they resolve to."""

    overrides: tuple[str, ...]
    seed: int
    scenario: Scenario = field(compare=False, repr=False)
    digest: str = field(compare=False, repr=False)
    """``scenario_hash(scenario)``."""

    @property
    def name(self) -> str:
        """Filesystem-safe folder name, e.g. ``compression.quantize-int8__seed-1__3fa2c1d09b7e``."""
        parts = [*(o.replace("=", "-") for o in self.overrides), f"seed-{self.seed}"]
        readable = re.sub(r"[^\w.\-]+", "_", "__".join(parts), flags=re.ASCII)
        return f"{readable[:READABLE_CHARS]}__{self.digest[:HASH_CHARS]}"

    @property
    def variant(self) -> str:
        """The overrides without the seed: runs of one variant differ only by seed."""
        return ", ".join(self.overrides) or "base"


def parse_grid(grid: str) -> tuple[str, list[str]]:
    """``KEY=V1,V2`` -> (KEY, ["KEY=V1", "KEY=V2"]).

    >>> parse_grid("compression.quantize=none,int8")
    ('compression.quantize', ['compression.quantize=none', 'compression.quantize=int8'])
    """
    key, sep, values = grid.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise ScenarioError(f"--grid {grid!r}: expected KEY=V1,V2,...")
    return key, [f"{key}={value.strip()}" for value in values.split(",")]


def grid_combos(grids: list[str], seeds: int, base_seed: int) -> list[tuple[tuple[str, ...], int]]:
    """The cartesian product of the grids as (overrides, seed) pairs.

    Seeds are ``seeds`` values from ``base_seed`` on, or the values of a ``--grid seed=...``.

    >>> grid_combos(["a=1,2", "seed=7,9"], 1, 0)
    [(('a=1',), 7), (('a=1',), 9), (('a=2',), 7), (('a=2',), 9)]
    """
    if seeds < 1:
        raise ScenarioError(f"--seeds must be >= 1: {seeds}")
    parsed = [parse_grid(grid) for grid in grids]
    keys = [key for key, _ in parsed]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ScenarioError(f"--grid: each key once, but {', '.join(twice)} is given twice")
    axes = [values for key, values in parsed if key != SEED]
    seed_values = [_seed(value) for key, values in parsed if key == SEED for value in values]
    if seed_values and seeds != 1:
        raise ScenarioError(f"--grid seed=... lists the seeds: drop --seeds {seeds}")
    seed_axis = seed_values or range(base_seed, base_seed + seeds)
    return [(tuple(combo), seed) for combo in itertools.product(*axes) for seed in seed_axis]


def _seed(assignment: str) -> int:
    text = assignment.partition("=")[2]
    if not (text.isascii() and text.isdecimal()):
        raise ScenarioError(f"--grid seed: values must be integers >= 0: {text!r}")
    return int(text)


def make_point(raw: dict[str, Any], overrides: tuple[str, ...], seed: int, origin: str) -> Point:
    """The point of ``overrides`` and ``seed``, its scenario validated and hashed.

    A relative ``data.path`` given as an override is relative to the working directory.
    """
    resolved = anchor_paths(apply_overrides(raw, [*overrides, f"seed={seed}"]), Path.cwd())
    where = f"{origin} with {', '.join(overrides)}" if overrides else origin
    scenario = parse_scenario(resolved, origin=where)
    return Point(overrides, seed, scenario, scenario_hash(scenario))


def run_point(point: Point, out: str, threads: int) -> dict[str, Any]:
    """Run (or resume, or skip when finished) one point into ``out/NAME``; return its row."""
    import torch

    from hierfl.sim.runner import resume, simulate

    torch.set_num_threads(threads)
    folder = Path(out) / point.name
    started = time.perf_counter()
    try:
        _claim(folder, point)
        if (folder / CHECKPOINT).is_file():
            result = resume(folder)
        else:
            result = simulate(point.scenario, checkpoint_dir=folder)
        result.write(folder)
        (folder / CHECKPOINT).unlink(missing_ok=True)
        (folder / ERROR_FILE).unlink(missing_ok=True)
        return _row(point, "ok", result.summary, time.perf_counter() - started)
    except Exception as error:  # a failing run is recorded, the sweep goes on
        folder.mkdir(parents=True, exist_ok=True)
        message = f"{type(error).__name__}: {error}"
        atomic_write(folder / ERROR_FILE, lambda p: Path(p).write_text(message + "\n"))
        return _row(point, "failed", {}, time.perf_counter() - started, message)


def _claim(folder: Path, point: Point) -> None:
    """Mark ``folder`` as ``point``'s (its POINT_FILE), before anything else is written."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {"overrides": list(point.overrides), "seed": point.seed, "scenario_hash": point.digest}
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(folder / POINT_FILE, lambda p: Path(p).write_text(text))


def _owner_hash(folder: Path) -> str | None:
    """The scenario hash recorded in ``folder``'s POINT_FILE (None: none, or unreadable)."""
    try:
        return json.loads((folder / POINT_FILE).read_text())["scenario_hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_finished(out: Path, point: Point) -> bool:
    """True when ``out/NAME`` holds a finished run of exactly ``point``'s scenario."""
    folder = out / point.name
    return (folder / "summary.json").is_file() and _owner_hash(folder) == point.digest


def _check_folders(out: Path, points: list[Point]) -> None:
    """Refuse a folder that holds another scenario's run (a hash-prefix collision)."""
    for point in points:
        owner = _owner_hash(out / point.name)
        if owner is not None and owner != point.digest:
            raise HierflError(
                f"sweep folder {out / point.name} holds a run of another scenario "
                f"(hash {owner[:16]}..., this point's {point.digest[:16]}...): move it away"
            )


def _finished_row(out: Path, point: Point) -> dict[str, Any]:
    """The row of a run that finished in an earlier sweep (its summary.json exists)."""
    summary = json.loads((out / point.name / "summary.json").read_text())
    return _row(point, "ok", summary, wall_s=0.0)


def _row(
    point: Point, status: str, summary: dict[str, Any], wall_s: float, error: str = ""
) -> dict[str, Any]:
    row: dict[str, Any] = {"run": point.name, "variant": point.variant, "seed": point.seed}
    for override in point.overrides:
        key, _, value = override.partition("=")
        row[key] = value
    row |= {"status": status, "error": error, "wall_s": round(wall_s, 3)}
    return row | {column: summary.get(column) for column in RESULT_COLUMNS}


@dataclass(frozen=True)
class SweepPlan:
    """Everything a sweep needs, validated before any run starts."""

    points: list[Point]
    out: Path

    def stale_folders(self) -> list[Path]:
        """Run folders under ``out`` that no point of this plan owns (an earlier scenario's)."""
        if not self.out.is_dir():
            return []
        names = {point.name for point in self.points}
        return sorted(
            folder
            for folder in self.out.iterdir()
            if (folder / POINT_FILE).is_file() and folder.name not in names
        )


def plan_sweep(
    scenario: str | Path,
    grids: list[str],
    seeds: int,
    out: str | Path,
    max_runs: int = 1000,
    confirmed: bool = False,
) -> SweepPlan:
    """Read the scenario, expand the grid and validate every point (nothing is written).

    Two points that resolve to the same scenario are refused: they would share a folder.
    """
    raw = read_scenario_file(scenario)
    base_seed = parse_scenario(raw, origin=str(scenario)).seed
    combos = grid_combos(grids, seeds, base_seed)
    if len(combos) > max_runs and not confirmed:
        raise HierflError(
            f"sweep of {len(combos)} runs exceeds --max-runs {max_runs} (pass --yes to run it)"
        )
    points = [make_point(raw, overrides, seed, str(scenario)) for overrides, seed in combos]
    seen: dict[str, Point] = {}
    for point in points:
        twin = seen.setdefault(point.digest, point)
        if twin is not point:
            raise ScenarioError(
                f"--grid: {twin.variant} (seed {twin.seed}) and {point.variant} "
                f"(seed {point.seed}) resolve to the same scenario; list each value once"
            )
    return SweepPlan(points, Path(out))


def run_sweep(
    plan: SweepPlan,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    num_cpus: int = 1,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Run every point of ``plan`` on ``backend``; write sweep.csv; return it.

    ``workers`` local processes (default: one per core) or Ray tasks of ``num_cpus`` CPUs.
    """
    if backend not in ("local", "ray"):
        raise HierflError(f"--backend must be local or ray: {backend!r}")
    for option, value in (("--workers", workers), ("--num-cpus", num_cpus)):
        if value is not None and value < 1:
            raise HierflError(f"{option} must be >= 1: {value}")
    _check_folders(plan.out, plan.points)
    plan.out.mkdir(parents=True, exist_ok=True)
    finished = [p for p in plan.points if _is_finished(plan.out, p)]
    rows = [_report(_finished_row(plan.out, p), on_done) for p in finished]
    todo = SweepPlan([p for p in plan.points if p not in finished], plan.out)
    if todo.points and backend == "local":
        rows += _run_local(todo, workers or os.cpu_count() or 1, on_done)
    elif todo.points:
        rows += _run_ray(todo, address, num_cpus, on_done)
    order = {point.name: k for k, point in enumerate(plan.points)}
    table = pd.DataFrame(sorted(rows, key=lambda row: order[row["run"]]))
    atomic_write(plan.out / "sweep.csv", lambda p: table.to_csv(p, index=False))
    return table


def _run_local(plan: SweepPlan, workers: int, on_done) -> list[dict[str, Any]]:
    threads = max(1, (os.cpu_count() or 1) // workers)
    if workers == 1:
        return [_report(run_point(p, str(plan.out), threads), on_done) for p in plan.points]
    context = get_context("spawn")
    stop = context.Event()
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(os.getpid(), stop)
    )
    try:
        futures = [pool.submit(run_point, p, str(plan.out), threads) for p in plan.points]
        return [_report(future.result(), on_done) for future in as_completed(futures)]
    finally:  # all done, or interrupted: no worker outlives the sweep
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)


PARENT_POLL_S = 0.5
"""How often a pool worker checks that the sweep process is still alive."""


def _start_worker(parent: int, stop: Event) -> None:
    """Pool worker start-up: exit as soon as ``stop`` is set or the sweep process is gone.

    Ctrl-C is the sweep process's to handle (it sets ``stop``). A killed sweep (SIGKILL,
    a closed terminal) would otherwise leave its workers running, each holding a model and
    its data. A run stopped mid-way resumes from its checkpoint in the next sweep.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while not stop.wait(PARENT_POLL_S) and os.getppid() == parent:
            pass
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-sweep", daemon=True).start()


def _run_ray(plan: SweepPlan, address: str | None, num_cpus: int, on_done) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise HierflError("--backend ray needs Ray: pip install 'hierfl[ray]'") from None
    ray.init(
        address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False
    )
    remote = ray.remote(num_cpus=num_cpus)(run_point)
    pending = [remote.remote(p, str(plan.out.resolve()), num_cpus) for p in plan.points]
    rows = []
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        rows.append(_report(ray.get(done[0]), on_done))
    return rows


def _report(row: dict[str, Any], on_done) -> dict[str, Any]:
    if on_done is not None:
        on_done(row)
    return row
