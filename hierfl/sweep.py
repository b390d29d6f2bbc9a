"""Grids of runs on a local process pool or Ray: one run folder per point, plus sweep.csv.

A point is a scenario file with ``--grid`` overrides and a seed. Points run independently
and deterministically, so the backend changes wall time, never results. A sweep folder
that already holds finished runs skips them; a run killed mid-way resumes from its
checkpoint; a failing run records its error and does not stop the others.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd

from hierfl.checkpoint import CHECKPOINT
from hierfl.errors import HierflError, ScenarioError
from hierfl.results import atomic_write
from hierfl.scenario import apply_overrides, parse_scenario

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


@dataclass(frozen=True)
class Point:
    """One run of a sweep: grid overrides, a seed, and the folder name derived from them."""

    overrides: tuple[str, ...]
    seed: int

    @property
    def name(self) -> str:
        """A readable, filesystem-safe folder name, e.g. ``compression.quantize-int8__seed-1``."""
        parts = [*(o.replace("=", "-") for o in self.overrides), f"seed-{self.seed}"]
        return re.sub(r"[^\w.\-]+", "_", "__".join(parts))

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


def grid_points(grids: list[str], seeds: int, base_seed: int) -> list[Point]:
    """The cartesian product of the grids, times ``seeds`` seeds from ``base_seed`` on."""
    if seeds < 1:
        raise ScenarioError(f"--seeds must be >= 1: {seeds}")
    axes = [parse_grid(grid)[1] for grid in grids]
    return [
        Point(tuple(combo), base_seed + k)
        for combo in itertools.product(*axes)
        for k in range(seeds)
    ]


def point_scenario(raw: dict[str, Any], point: Point):
    """The validated scenario of one point."""
    overrides = [*point.overrides, f"seed={point.seed}"]
    return parse_scenario(apply_overrides(raw, overrides), origin=point.name)


def run_point(raw: dict[str, Any], point: Point, out: str, threads: int) -> dict[str, Any]:
    """Run (or resume, or skip when finished) one point into ``out/NAME``; return its row."""
    import torch

    from hierfl.sim.runner import resume, simulate

    torch.set_num_threads(threads)
    folder = Path(out) / point.name
    started = time.perf_counter()
    try:
        if (folder / CHECKPOINT).is_file():
            result = resume(folder)
        else:
            result = simulate(point_scenario(raw, point), checkpoint_dir=folder)
        result.write(folder)
        (folder / CHECKPOINT).unlink(missing_ok=True)
        (folder / ERROR_FILE).unlink(missing_ok=True)
        return _row(point, "ok", result.summary, time.perf_counter() - started)
    except Exception as error:  # a failing run is recorded, the sweep goes on
        folder.mkdir(parents=True, exist_ok=True)
        message = f"{type(error).__name__}: {error}"
        atomic_write(folder / ERROR_FILE, lambda p: Path(p).write_text(message + "\n"))
        return _row(point, "failed", {}, time.perf_counter() - started, message)


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

    raw: dict[str, Any]
    points: list[Point]
    out: Path


def plan_sweep(
    scenario: Path,
    grids: list[str],
    seeds: int,
    out: Path,
    max_runs: int = 1000,
    confirmed: bool = False,
) -> SweepPlan:
    """Read the scenario, expand the grid and validate every point (nothing is written)."""
    try:
        raw = tomllib.loads(Path(scenario).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"{scenario}: no such scenario file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ScenarioError(f"{scenario}: not valid TOML: {error}") from None
    base_seed = parse_scenario(raw, origin=str(scenario)).seed
    points = grid_points(grids, seeds, base_seed)
    if len(points) > max_runs and not confirmed:
        raise HierflError(
            f"sweep of {len(points)} runs exceeds --max-runs {max_runs} (pass --yes to run it)"
        )
    for point in points:
        point_scenario(raw, point)
    return SweepPlan(raw, points, Path(out))


def run_sweep(
    plan: SweepPlan,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    num_cpus: int = 1,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Run every point of ``plan`` on ``backend``; write sweep.csv and figures; return it."""
    if backend not in ("local", "ray"):
        raise HierflError(f"--backend must be local or ray: {backend!r}")
    plan.out.mkdir(parents=True, exist_ok=True)
    finished = [p for p in plan.points if (plan.out / p.name / "summary.json").is_file()]
    rows = [_report(_finished_row(plan.out, p), on_done) for p in finished]
    todo = SweepPlan(plan.raw, [p for p in plan.points if p not in finished], plan.out)
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
        return [
            _report(run_point(plan.raw, p, str(plan.out), threads), on_done) for p in plan.points
        ]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_point, plan.raw, p, str(plan.out), threads) for p in plan.points]
        return [_report(future.result(), on_done) for future in as_completed(futures)]


def _run_ray(plan: SweepPlan, address: str | None, num_cpus: int, on_done) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise HierflError("--backend ray needs Ray: pip install 'hierfl[ray]'") from None
    ray.init(
        address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False
    )
    remote = ray.remote(num_cpus=num_cpus)(run_point)
    pending = [remote.remote(plan.raw, p, str(plan.out.resolve()), num_cpus) for p in plan.points]
    rows = []
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        rows.append(_report(ray.get(done[0]), on_done))
    return rows


def _report(row: dict[str, Any], on_done) -> dict[str, Any]:
    if on_done is not None:
        on_done(row)
    return row
