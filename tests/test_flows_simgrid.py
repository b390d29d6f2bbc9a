"""Flow end times against SimGrid's (CM02, no cross-traffic): hand cases, then random fleets.

SimGrid runs under the system python (Debian's python3-simgrid), in one subprocess per batch
of cases: see tests/simgrid_flows.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from naive_flows import naive_solve

from hierfl.sim.flows import solve

SIMGRID_PYTHON = os.environ.get("HIERFL_SIMGRID_PYTHON", "/usr/bin/python3")
SCRIPT = Path(__file__).with_name("simgrid_flows.py")
INSTALL = ("SimGrid is missing: `apt-get update && apt-get install -y python3-simgrid` "
           "(Debian/Ubuntu, for /usr/bin/python3), or point HIERFL_SIMGRID_PYTHON at a python "
           "that can `import simgrid`")
INF = math.inf

# Both sides compute the same piecewise-constant rates; they differ only by rounding over a
# few dozen events (~1e-15 each) and SimGrid's saturation slack (maxmin/precision = 1e-10).
# 1e-7 of a flow's duration leaves a margin of 1e3 above that, and any modelling difference
# (a missed recomputation, a wrong share) moves some end time by far more.
RTOL = 1e-9

Case = dict[str, Any]


def case(start_s: list[float], size_bytes: list[int], cap_bytes_s: list[float],
         paths: list[list[int]], capacity_bytes_s: list[float],
         stop_s: list[float] | None = None) -> Case:
    """A flow problem as the solvers take it: arrays, paths padded with -1."""
    width = max([len(p) for p in paths] + [1])
    return {
        "start_s": np.asarray(start_s, dtype=float),
        "size_bytes": np.asarray(size_bytes, dtype=np.int64),
        "cap_bytes_s": np.asarray(cap_bytes_s, dtype=float),
        "paths": np.asarray([p + [-1] * (width - len(p)) for p in paths], dtype=np.int64),
        "capacity_bytes_s": np.asarray(capacity_bytes_s, dtype=float),
        "stop_s": None if stop_s is None else np.asarray(stop_s, dtype=float),
    }


def as_json(problem: Case) -> dict[str, Any]:
    """The case in the input format of tests/simgrid_flows.py."""
    stop = problem["stop_s"]
    flows = []
    for i, row in enumerate(problem["paths"]):
        cap = float(problem["cap_bytes_s"][i])
        flows.append({
            "start_s": float(problem["start_s"][i]),
            "size_bytes": int(problem["size_bytes"][i]),
            "cap_bytes_s": None if math.isinf(cap) else cap,
            "path": [int(link) for link in row if link >= 0],
            "stop_s": None if stop is None or math.isinf(stop[i]) else float(stop[i]),
        })
    return {"capacity_bytes_s": [float(c) for c in problem["capacity_bytes_s"]], "flows": flows}


def simgrid(problems: list[Case]) -> list[dict[str, np.ndarray]]:
    """Each case's end times and bytes sent under SimGrid, from one subprocess for the batch."""
    batch = json.dumps({"cases": [as_json(p) for p in problems]})
    try:
        done = subprocess.run([SIMGRID_PYTHON, str(SCRIPT)], input=batch, capture_output=True,
                              text=True, timeout=300, check=False)
    except FileNotFoundError:
        pytest.fail(f"{SIMGRID_PYTHON} not found. {INSTALL}")
    if "No module named 'simgrid'" in done.stderr:
        pytest.fail(f"{SIMGRID_PYTHON} has no simgrid. {INSTALL}")
    if done.returncode != 0:
        pytest.fail(f"tests/simgrid_flows.py failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return [{key: np.asarray(values) for key, values in result.items()}
            for result in json.loads(done.stdout)["cases"]]


# (case, end_s, sent_bytes) worked out by hand; capacities in bytes/s.
HAND = {
    # 1000 B at min(1000, 500) B/s from t = 1.
    "one flow": (case([1.0], [1000], [1000.0], [[0]], [500.0]), [3.0], [1000]),
    # A alone for 0.5 s (50 B), then 50 B/s each: A done at 1.5; B has 50 B left, alone: 2.0.
    "two flows, staggered": (case([0.0, 0.5], [100, 100], [INF, INF], [[0], [0]], [100.0]),
                             [1.5, 2.0], [100, 100]),
    # B held at its 20 B/s cap, A takes the other 80: A done at 300 / 80 = 3.75, B at 5.
    "private cap beside a shared bottleneck": (
        case([0.0, 0.0], [300, 100], [INF, 20.0], [[0], [0]], [100.0]), [3.75, 5.0], [300, 100]),
    # Cell 100, core 20. A (cell + core) gets 20 on the core, B its own 30 cap, C the cell's
    # other 50. C done at 200 / 50 = 4; A at 100 / 20 = 5; B at 300 / 30 = 10.
    "core, radio and cell bottlenecks": (
        case([0.0, 0.0, 0.0], [100, 300, 200], [INF, 30.0, INF], [[0, 1], [0], [0]],
             [100.0, 20.0]),
        [5.0, 10.0, 4.0], [100, 300, 200]),
    # 5 B/s each; A stops at 4 having sent 20; B alone at 10 B/s sends its last 80 by 12;
    # C's sender stops (t = 3) before its start (t = 5): nothing sent.
    "stopped senders": (
        case([0.0, 0.0, 5.0], [100, 100, 100], [INF, INF, INF], [[0], [0], [0]], [10.0],
             stop_s=[4.0, 30.0, 3.0]),
        [4.0, 12.0, 3.0], [20, 100, 0]),
}


@pytest.fixture(scope="module")
def hand_simgrid() -> dict[str, dict[str, np.ndarray]]:
    """SimGrid's answers to the hand cases, in one subprocess."""
    names = list(HAND)
    return dict(zip(names, simgrid([HAND[name][0] for name in names]), strict=True))


@pytest.mark.parametrize("name", list(HAND))
def test_simgrid_reference_matches_hand_cases(name: str, hand_simgrid) -> None:
    """The SimGrid reference gives the hand-computed end times and bytes sent."""
    _, end_s, sent_bytes = HAND[name]
    np.testing.assert_allclose(hand_simgrid[name]["end_s"], end_s, rtol=1e-12)
    np.testing.assert_allclose(hand_simgrid[name]["sent_bytes"], sent_bytes, rtol=1e-12)


@pytest.mark.parametrize("name", list(HAND))
def test_solve_matches_hand_cases(name: str) -> None:
    """hierfl's solver gives the hand-computed end times, bytes sent and done flags."""
    problem, end_s, sent_bytes = HAND[name]
    solution = solve(**problem)
    np.testing.assert_allclose(solution.end_s, end_s, rtol=1e-12)
    np.testing.assert_allclose(solution.sent_bytes, sent_bytes, rtol=1e-12)
    np.testing.assert_array_equal(solution.done, np.equal(sent_bytes, problem["size_bytes"]))


@pytest.mark.parametrize("name", list(HAND))
def test_naive_solver_matches_hand_cases(name: str) -> None:
    """The naive reference solver gives the hand-computed end times and bytes sent."""
    problem, end_s, sent_bytes = HAND[name]
    solution = naive_solve(**problem)
    np.testing.assert_allclose(solution.end_s, end_s, rtol=1e-12)
    np.testing.assert_allclose(solution.sent_bytes, sent_bytes, rtol=1e-12)


def random_fleet(rng: np.random.Generator) -> Case:
    """1 to 3 edges, each with a cell and a backhaul, and one core link; 1 to 40 flows.

    Flows go device to edge [cell], edge to cloud [backhaul, core] or device to cloud [cell,
    backhaul, core]. Their caps come from 1 to 3 profiles (uncapped included), so that
    several flows share a cap and a path, as devices of one profile in one cell do. Half the
    fleets start their flows at a few shared instants (as when an edge sends to all of its
    devices at once) and send one of a few sizes (one model), so that flows finish together;
    a third have senders that stop early.
    """
    edges = int(rng.integers(1, 4))
    core = 2 * edges
    n_links = 2 * edges + 1
    capacity = rng.choice([2e3, 1.25e4, 1.25e5, 1.25e6], n_links) * rng.uniform(0.5, 2.0, n_links)
    n = int(rng.integers(1, 41))
    edge = rng.integers(0, edges, n)
    routes = [[[e], [edges + e, core], [e, edges + e, core]] for e in range(edges)]
    paths = [routes[e][k] for e, k in zip(edge, rng.integers(0, 3, n), strict=True)]
    profiles = rng.choice([INF, 1e3, 1e4, 1e5, 1e6], 3) * rng.uniform(0.5, 2.0, 3)
    cap = rng.choice(profiles[:rng.integers(1, 4)], n)
    if rng.random() < 0.5:
        start = rng.choice([0.0, 0.25, 1.0], n)
        size = rng.choice(rng.integers(1_000, 2_000_000, 3), n)
    else:
        start = rng.uniform(0.0, 5.0, n)
        size = rng.integers(1_000, 2_000_000, n)
    stop = None
    if rng.random() < 1 / 3:
        stop = np.where(rng.random(n) < 0.5, start + rng.uniform(0.01, 50.0, n), INF)
    return case(list(start), list(size), list(cap), paths, list(capacity),
                None if stop is None else list(stop))


@pytest.fixture(scope="module")
def fleets() -> list[tuple[Case, dict[str, np.ndarray]]]:
    """60 seeded random fleets and SimGrid's answers to them, in one subprocess."""
    rng = np.random.default_rng(20261130)
    problems = [random_fleet(rng) for _ in range(60)]
    return list(zip(problems, simgrid(problems), strict=True))


def assert_agrees(problem: Case, end_s: np.ndarray, sent_bytes: np.ndarray,
                  reference: dict[str, np.ndarray]) -> None:
    """End times within RTOL of the flow's duration, bytes sent within RTOL of its size."""
    start = problem["start_s"]
    np.testing.assert_allclose(end_s - start, reference["end_s"] - start, rtol=RTOL,
                               err_msg=f"case: {as_json(problem)}")
    np.testing.assert_allclose(sent_bytes, reference["sent_bytes"], rtol=RTOL,
                               atol=RTOL * float(np.max(problem["size_bytes"])),
                               err_msg=f"case: {as_json(problem)}")


def test_solve_matches_simgrid_on_random_fleets(fleets) -> None:
    """hierfl's solver ends every flow when SimGrid does, with the bytes it sent, on 60 random
    fleets."""
    for problem, reference in fleets:
        solution = solve(**problem)
        assert_agrees(problem, solution.end_s, solution.sent_bytes, reference)


def test_naive_solver_matches_simgrid_on_random_fleets(fleets) -> None:
    """The naive reference solver ends every flow when SimGrid does, on 60 random fleets."""
    for problem, reference in fleets:
        solution = naive_solve(**problem)
        assert_agrees(problem, solution.end_s, solution.sent_bytes, reference)
