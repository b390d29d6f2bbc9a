"""Invariants of the flow solver on random networks, and agreement with a naive solver."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from naive_flows import links_of, naive_solve, progressive_filling

from hierfl.sim.flows import max_min_rates, solve

# Relative slack for float sums: rates and loads add up a dozen terms.
EPS = 1e-9
# Solver against the naive one: both compute the same rates; end times may differ by the
# rounding of a few dozen event steps.
RTOL = 1e-9


@st.composite
def networks(draw) -> dict[str, np.ndarray]:
    """1 to 4 shared links, 1 to 12 flows over 0 to 3 distinct links each, some uncapped.

    Capacities and caps are whole numbers from a small range, so that ties (two flows
    frozen at once, a cap equal to a fair share) come up often.
    """
    n_links = draw(st.integers(1, 4))
    scale = draw(st.sampled_from([1.0, 125.0, 1250.0]))
    capacity = np.array(draw(st.lists(st.integers(1, 100), min_size=n_links,
                                      max_size=n_links)), dtype=float) * scale
    n = draw(st.integers(1, 12))
    width = draw(st.integers(1, 3))
    paths = np.full((n, width), -1, dtype=np.int64)
    cap = np.empty(n)
    for i in range(n):
        path = draw(st.lists(st.integers(0, n_links - 1), max_size=min(width, n_links),
                             unique=True))
        paths[i, :len(path)] = path
        uncapped = st.just(math.inf) if path else st.nothing()
        cap[i] = draw(uncapped | st.integers(1, 100).map(lambda c, s=scale: c * s))
    return {"cap_bytes_s": cap, "paths": paths, "capacity_bytes_s": capacity}


@st.composite
def flow_problems(draw) -> dict[str, np.ndarray | None]:
    """A network plus start times (often tied), sizes and, sometimes, stop times."""
    network = draw(networks())
    n = len(network["cap_bytes_s"])
    instants = st.sampled_from([0.0, 0.5, 2.0]) | st.floats(0.0, 10.0)
    start = np.array(draw(st.lists(instants, min_size=n, max_size=n)))
    size = np.array(draw(st.lists(st.integers(1, 1_000_000), min_size=n, max_size=n)))
    stop = None
    if draw(st.booleans()):
        after = st.floats(0.01, 1000.0) | st.just(math.inf)
        stop = start + np.array(draw(st.lists(after, min_size=n, max_size=n)))
    return {"start_s": start, "size_bytes": size, "stop_s": stop, **network}


def link_loads(rates: np.ndarray, paths: np.ndarray, n_links: int) -> np.ndarray:
    """The sum of the rates of the flows over each link."""
    load = np.zeros(n_links)
    for rate, links in zip(rates, links_of(paths), strict=True):
        load[links] += rate
    return load


def path_bound(cap: np.ndarray, paths: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Each flow's fastest rate: the least of its cap and the capacities on its path."""
    return np.array([min([c, *capacity[links]]) for c, links in zip(cap, links_of(paths),
                                                                     strict=True)])


@given(networks())
def test_max_min_rates_fit_every_link_and_cap(network) -> None:
    """Rates are >= 0, at most each flow's cap, and sum to at most each link's capacity."""
    rates = max_min_rates(**network)
    assert rates.shape == network["cap_bytes_s"].shape
    assert np.all(rates >= 0)
    assert np.all(rates <= network["cap_bytes_s"] * (1 + EPS))
    load = link_loads(rates, network["paths"], len(network["capacity_bytes_s"]))
    assert np.all(load <= network["capacity_bytes_s"] * (1 + EPS))


@given(networks())
def test_max_min_rates_meet_the_max_min_condition(network) -> None:
    """Every flow is at its cap or crosses a full link on which no flow gets more than it."""
    cap, paths, capacity = network["cap_bytes_s"], network["paths"], network["capacity_bytes_s"]
    rates = max_min_rates(**network)
    load = link_loads(rates, paths, len(capacity))
    links = links_of(paths)
    for i, rate in enumerate(rates):
        if rate >= cap[i] * (1 - EPS):
            continue
        bottlenecks = [link for link in links[i] if load[link] >= capacity[link] * (1 - EPS)
                       and rate >= max(rates[j] for j in range(len(rates)) if link in links[j])
                       * (1 - EPS)]
        assert bottlenecks, f"flow {i} at {rate} B/s has neither its cap nor a bottleneck"


@given(networks())
def test_max_min_rates_equal_progressive_filling(network) -> None:
    """The max-min allocation is unique: the solver's equals the naive progressive filling."""
    rates = max_min_rates(**network)
    n = len(rates)
    naive = progressive_filling(list(range(n)), network["cap_bytes_s"],
                                links_of(network["paths"]), network["capacity_bytes_s"])
    np.testing.assert_allclose(rates, [naive[i] for i in range(n)], rtol=RTOL)


@given(flow_problems())
def test_solve_conserves_bytes(problem) -> None:
    """Done flows sent exactly their size; stopped ones sent less and ended at their stop."""
    solution = solve(**problem)
    size = problem["size_bytes"].astype(float)
    done = solution.done
    np.testing.assert_allclose(solution.sent_bytes[done], size[done], rtol=EPS)
    assert np.all(solution.sent_bytes[~done] < size[~done])
    assert np.all(solution.sent_bytes >= 0)
    if problem["stop_s"] is not None:
        stop = problem["stop_s"]
        np.testing.assert_allclose(solution.end_s[~done], stop[~done], rtol=EPS)
        assert np.all(solution.end_s[done] <= stop[done] * (1 + EPS))
    else:
        assert np.all(done)


@given(flow_problems())
def test_no_flow_beats_its_path(problem) -> None:
    """No flow sends faster than its cap or any link on its path allows."""
    solution = solve(**problem)
    bound = path_bound(problem["cap_bytes_s"], problem["paths"], problem["capacity_bytes_s"])
    fastest_end = problem["start_s"] + solution.sent_bytes / bound
    assert np.all(solution.end_s >= fastest_end - EPS * np.maximum(fastest_end, 1.0))


@given(flow_problems())
def test_link_loads_fit_and_carry_the_bytes_sent(problem) -> None:
    """Loads never exceed capacity, and each link's load over time adds up to the bytes of the
    flows that cross it."""
    solution = solve(**problem)
    capacity = problem["capacity_bytes_s"]
    times, load = solution.times_s, solution.load_bytes_s
    assert load.shape == (max(len(times) - 1, 0), len(capacity))  # no step at all: no times
    assert np.all(np.diff(times) >= 0)
    assert np.all(load >= -EPS * capacity)
    assert np.all(load <= capacity * (1 + EPS))
    carried = np.diff(times) @ load
    expected = np.zeros(len(capacity))
    for sent, links in zip(solution.sent_bytes, links_of(problem["paths"]), strict=True):
        expected[links] += sent
    np.testing.assert_allclose(carried, expected, rtol=1e-7, atol=1e-6)


@given(flow_problems())
def test_solve_equals_the_naive_solver(problem) -> None:
    """solve() ends each flow when, and with the bytes, a from-scratch recomputation at every
    event says."""
    solution = solve(**problem)
    naive = naive_solve(**problem)
    start = problem["start_s"]
    np.testing.assert_allclose(solution.end_s - start, naive.end_s - start, rtol=RTOL,
                               atol=1e-12)
    np.testing.assert_allclose(solution.sent_bytes, naive.sent_bytes, rtol=RTOL, atol=1e-6)
    np.testing.assert_array_equal(solution.done, naive.done)
