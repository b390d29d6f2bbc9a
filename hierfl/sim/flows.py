"""Flows over shared links at max-min fair rates: SimGrid's flow model, as a pure solver.

A flow sends ``size_bytes`` from ``start_s`` (the end of its path latency) at a rate no
higher than its private ``cap_bytes_s`` (its access link) nor than its share of each shared
link on its path. The rates are the max-min fair allocation (progressive filling), and they
are recomputed whenever a flow enters or leaves; a flow ends when its bytes are sent, or at
``stop_s`` when its sender stops first (an empty battery).

Flows with the same cap and the same shared links always have the same rate, so the solver
works on those *classes*, not on flows: a class keeps one service counter (bytes sent per
flow since time 0 at the class's rate) and its flows' virtual finish values in sorted
batches, one per entry instant, under a heap of their heads (``_Queue``): a batch enters
with one sort and leaves with one search, and each event costs O(K * L) for K classes
active over L links. Flows that cross no shared link are solved in closed form. Fleets
whose devices share a few profiles have a few classes per cell; with per-device bandwidths
(``bandwidth_sigma`` > 0) every device is its own class and an event costs O(devices).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import pandas as pd

TIE = 1e-12  # relative: link levels this close saturate at the same time


@dataclass(frozen=True)
class Solution:
    """How each flow ended, and the load on each shared link over time.

    Link ``l`` carries ``load_bytes_s[j, l]`` bytes/s during ``[times_s[j], times_s[j+1])``.
    """

    end_s: np.ndarray
    sent_bytes: np.ndarray
    done: np.ndarray
    times_s: np.ndarray
    load_bytes_s: np.ndarray


def max_min_rates(
    cap_bytes_s: np.ndarray, paths: np.ndarray, capacity_bytes_s: np.ndarray
) -> np.ndarray:
    """Max-min fair rate of each flow (bytes/s): progressive filling over links and caps.

    ``paths[f]`` lists the shared links flow ``f`` crosses (-1 pads), ``capacity_bytes_s``
    their capacities; ``cap_bytes_s[f]`` is the flow's private cap.

    >>> max_min_rates(np.array([1.0, 10.0, 10.0]), np.array([[0], [0], [0]]), np.array([9.0]))
    array([1., 4., 4.])
    """
    capacity_bytes_s = np.asarray(capacity_bytes_s, dtype=float)
    cap_bytes_s = np.asarray(cap_bytes_s, dtype=float)
    paths = _as_paths(paths, len(cap_bytes_s))
    _check(cap_bytes_s, paths, capacity_bytes_s)
    classes, inverse = _classes(cap_bytes_s, paths, len(capacity_bytes_s))
    counts = np.bincount(inverse, minlength=len(classes.cap)).astype(float)
    return classes.rates(counts, capacity_bytes_s)[inverse]


def solve(
    start_s: np.ndarray,
    size_bytes: np.ndarray,
    cap_bytes_s: np.ndarray,
    paths: np.ndarray,
    capacity_bytes_s: np.ndarray,
    stop_s: np.ndarray | None = None,
) -> Solution:
    """Play the flows from their starts to their ends; see the module docstring.

    >>> s = solve(np.array([0.0, 1.0]), np.array([4.0, 1.0]), np.array([4.0, 4.0]),
    ...           np.array([[0], [0]]), np.array([2.0]))
    >>> s.end_s.tolist(), s.times_s.tolist(), s.load_bytes_s[:, 0].tolist()
    ([2.5, 2.0], [0.0, 2.5], [2.0])
    """
    start_s = np.asarray(start_s, dtype=float)
    size_bytes = np.asarray(size_bytes, dtype=float)
    capacity_bytes_s = np.asarray(capacity_bytes_s, dtype=float)
    n = len(start_s)
    stop_s = np.full(n, np.inf) if stop_s is None else np.asarray(stop_s, dtype=float)
    paths = _as_paths(paths, n)
    cap_bytes_s = np.asarray(cap_bytes_s, dtype=float)
    _check(cap_bytes_s, paths, capacity_bytes_s)
    end_s, sent, done = np.full(n, np.nan), np.zeros(n), np.zeros(n, dtype=bool)
    alone = (paths < 0).all(axis=1)  # no shared link: each at its own cap, from its start
    if not np.isinf(cap_bytes_s[alone]).any():
        finish_s = start_s[alone] + size_bytes[alone] / cap_bytes_s[alone]
        stop = stop_s[alone]
        done[alone] = finish_s <= stop
        end_s[alone] = np.where(done[alone], finish_s, stop)
        sent[alone] = np.where(done[alone], size_bytes[alone],
                               np.clip((stop - start_s[alone]) * cap_bytes_s[alone], 0, None))
    shared = np.flatnonzero(~alone)
    used, local = np.unique(paths[shared], return_inverse=True)  # the links crossed
    local = local.reshape(-1, paths.shape[1]) - (len(used) > 0 and used[0] < 0)
    used = used[used >= 0]
    classes, inverse = _classes(cap_bytes_s[shared], local, len(used))
    play = _Play(classes, inverse, size_bytes[shared], capacity_bytes_s[used])
    play.run(start_s[shared], stop_s[shared])
    solution = play.solution()
    end_s[shared], sent[shared], done[shared] = solution.end_s, solution.sent_bytes, solution.done
    load = np.zeros((len(solution.load_bytes_s), len(capacity_bytes_s)))
    load[:, used] = solution.load_bytes_s
    return Solution(end_s, sent, done, solution.times_s, load)


@dataclass(frozen=True)
class _Classes:
    """Flows grouped by (cap, shared links): ``cap`` per class, ``on[k, l]`` if k crosses l."""

    cap: np.ndarray
    on: np.ndarray

    def rates(self, counts: np.ndarray, capacity: np.ndarray) -> np.ndarray:
        """Per-flow rate of each class holding ``counts`` flows (0 for empty classes)."""
        rate = np.zeros(len(self.cap))
        free = counts > 0
        if np.isinf(self.cap[free]).any() and not self.on[free & np.isinf(self.cap)].any(1).all():
            raise ValueError("a flow has neither a finite cap nor a shared link: its rate is inf")
        left = capacity.astype(float).copy()
        while free.any():
            crossing = counts[free] @ self.on[free]  # unfrozen flows on each link
            with np.errstate(divide="ignore", invalid="ignore"):
                level_l = np.where(crossing > 0, left / crossing, np.inf)
            level = min(level_l.min(initial=np.inf), self.cap[free].min())
            full = level_l <= level * (1 + TIE)
            frozen = free & ((self.cap <= level) | self.on[:, full].any(1))
            rate[frozen] = level
            left = np.maximum(left - (counts[frozen] * level) @ self.on[frozen], 0.0)
            free &= ~frozen
        return rate


def _check(cap: np.ndarray, paths: np.ndarray, capacity: np.ndarray) -> None:
    if paths.size and paths.max() >= len(capacity):
        raise ValueError(f"paths name link {paths.max()}, but there are {len(capacity)} links")
    if (capacity <= 0).any() or (cap <= 0).any():
        raise ValueError("every capacity and cap must be > 0")


def _classes(cap: np.ndarray, paths: np.ndarray, n_links: int) -> tuple[_Classes, np.ndarray]:
    """Group flows by cap and set of shared links (hashed, O(n)); the classes and each flow's.

    >>> classes, inverse = _classes(np.array([1.0, 2.0, 1.0]), np.array([[0, 1], [0, -1],
    ...                             [1, 0]]), 2)
    >>> inverse.tolist(), classes.cap.tolist(), classes.on.tolist()
    ([0, 1, 0], [1.0, 2.0], [[True, True], [True, False]])
    """
    links = np.sort(paths, axis=1)  # a set of links: order and padding do not matter
    key = np.zeros(len(cap), dtype=np.int64)
    for column in links.T:  # base n_links + 1, at most a few columns of small numbers
        key = key * (n_links + 1) + (column + 1)
    path_of, _ = pd.factorize(key)
    cap_of, caps = pd.factorize(cap)
    inverse, first = pd.factorize(path_of.astype(np.int64) * len(caps) + cap_of)
    one = np.zeros(len(first), dtype=np.int64)
    one[inverse] = np.arange(len(cap))  # one flow of each class
    on = np.zeros((len(first), n_links), dtype=bool)
    rows, cols = np.nonzero(links[one] >= 0)
    on[rows, links[one][rows, cols]] = True
    return _Classes(cap[one], on), inverse


def _as_paths(paths: np.ndarray, n: int) -> np.ndarray:
    """``paths`` as an (n, k) array of link ids (a 1-d array: one link per flow)."""
    paths = np.asarray(paths, dtype=np.int64)
    return paths[:, None] if paths.ndim == 1 else paths.reshape(n, paths.shape[-1])


class _Queue:
    """One class's active flows by virtual finish value: sorted batches (one per entry
    instant) under a heap of their heads, so a batch enters with one sort and leaves with
    one search."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int]] = []
        self.batches: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.pos: dict[int, int] = {}
        self.next = 0

    def head(self) -> float:
        return self.heap[0][0]

    def push(self, finish: np.ndarray, flows: np.ndarray) -> None:
        order = np.argsort(finish, kind="stable")
        b, self.next = self.next, self.next + 1
        self.batches[b], self.pos[b] = (finish[order], flows[order]), 0
        heapq.heappush(self.heap, (float(finish[order[0]]), b))

    def pop_until(self, limit: float) -> np.ndarray:
        """Remove and return the flows whose finish value is at most ``limit``."""
        out = []
        while self.heap and self.heap[0][0] <= limit:
            _, b = heapq.heappop(self.heap)
            finish, flows = self.batches[b]
            end = int(np.searchsorted(finish, limit, side="right"))
            out.append(flows[self.pos[b] : end])
            self._resume(b, end)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def drop_inactive(self, active: np.ndarray) -> None:
        """Skip flows that left early (stopped) from the head, so the head is an active flow."""
        while self.heap:
            b = self.heap[0][1]
            finish, flows = self.batches[b]
            pos = self.pos[b]
            if active[flows[pos]]:
                return
            heapq.heappop(self.heap)
            alive = active[flows[pos:]]
            self._resume(b, pos + (int(np.argmax(alive)) if alive.any() else len(alive)))

    def _resume(self, b: int, pos: int) -> None:
        finish = self.batches[b][0]
        if pos < len(finish):
            self.pos[b] = pos
            heapq.heappush(self.heap, (float(finish[pos]), b))
        else:
            del self.batches[b], self.pos[b]

    def clear(self) -> None:
        self.heap.clear()
        self.batches.clear()
        self.pos.clear()


class _Play:
    """The event loop of ``solve``: classes share a service counter, flows a queue per class."""

    def __init__(
        self, classes: _Classes, inverse: np.ndarray, size: np.ndarray, capacity: np.ndarray
    ) -> None:
        self.classes, self.inverse, self.size = classes, inverse, size
        k, n = len(classes.cap), len(size)
        self.capacity = capacity
        self.service = np.zeros(k)  # bytes sent per flow of each class since t = 0
        self.rate = np.zeros(k)
        self.count = np.zeros(k)
        self.queues = [_Queue() for _ in range(k)]
        self.entered = np.zeros(n)  # service of the flow's class when it entered
        self.active = np.zeros(n, dtype=bool)
        self.end_s = np.full(n, np.nan)
        self.sent = np.zeros(n)
        self.done = np.zeros(n, dtype=bool)
        self.times: list[float] = []
        self.loads: list[np.ndarray] = []
        self.now = -np.inf

    def run(self, start_s: np.ndarray, stop_s: np.ndarray) -> None:
        """Advance from event to event: entries and stops (known), finishes (computed)."""
        starts = np.argsort(start_s, kind="stable")
        sorted_starts = start_s[starts]
        stops = np.argsort(stop_s, kind="stable")
        stops = stops[np.isfinite(stop_s[stops])]
        i = j = 0
        while i < len(starts) or self.count.any():
            t_enter = start_s[starts[i]] if i < len(starts) else np.inf
            t_stop = stop_s[stops[j]] if j < len(stops) else np.inf
            t_finish, finishing = self._next_finish()
            t = min(t_enter, t_stop, t_finish)
            self._advance(t)
            if t == t_finish:
                for k in finishing:
                    self._finish(k)
            while j < len(stops) and stop_s[stops[j]] <= t:
                self._stop(stops[j])
                j += 1
            entering, i = i, int(np.searchsorted(sorted_starts, t, side="right"))
            self._enter(starts[entering:i])
            self._rebalance()

    def _next_finish(self) -> tuple[float, np.ndarray]:
        """When the next flows finish, and their classes: every class whose head finishes
        then (equal flows of different classes end in one event, not one each)."""
        busy = np.flatnonzero(self.count > 0)
        if not len(busy):
            return np.inf, busy
        head = np.array([self.queues[k].head() for k in busy])
        with np.errstate(divide="ignore"):
            wait = np.maximum((head - self.service[busy]) / self.rate[busy], 0.0)
        first = wait.min()
        return self.now + first, busy[wait <= first * (1 + TIE)]

    def _advance(self, t: float) -> None:
        if self.now > -np.inf and t > self.now:
            busy = self.count > 0
            self.service[busy] += self.rate[busy] * (t - self.now)
        self.now = t

    def _finish(self, k: int) -> None:
        """Every flow of class ``k`` whose bytes are now sent ends (the head exactly now)."""
        queue = self.queues[k]
        self.service[k] = max(self.service[k], queue.head())
        flows = queue.pop_until(self.service[k] * (1 + TIE))
        self._leave(flows[self.active[flows]], k, done=True)
        queue.drop_inactive(self.active)

    def _stop(self, f: int) -> None:
        """The sender of ``f`` stops: its flow ends now (before it began: with 0 bytes)."""
        k = int(self.inverse[f])
        if self.active[f]:
            self._leave(np.array([f]), k, done=False)
            self.queues[k].drop_inactive(self.active)
        elif np.isnan(self.end_s[f]):
            self.end_s[f] = self.now

    def _leave(self, flows: np.ndarray, k: int, done: bool) -> None:
        self.active[flows] = False
        self.count[k] -= len(flows)
        self.end_s[flows] = self.now
        self.done[flows] = done
        sent = self.service[k] - self.entered[flows]
        self.sent[flows] = self.size[flows] if done else np.minimum(sent, self.size[flows])
        if not self.count[k]:
            self.queues[k].clear()

    def _enter(self, flows: np.ndarray) -> None:
        flows = flows[np.isnan(self.end_s[flows])]  # not stopped before they began
        empty = self.size[flows] <= 0
        self.end_s[flows[empty]], self.done[flows[empty]] = self.now, True
        flows = flows[~empty]
        if not len(flows):
            return
        k = self.inverse[flows]
        self.active[flows] = True
        self.entered[flows] = self.service[k]
        finish = self.service[k] + self.size[flows]
        order = np.argsort(k, kind="stable")
        classes, first, counts = np.unique(k[order], return_index=True, return_counts=True)
        self.count[classes] += counts
        for c, lo, m in zip(classes, first, counts, strict=True):
            group = order[lo : lo + m]
            self.queues[c].push(finish[group], flows[group])

    def _rebalance(self) -> None:
        self.rate = self.classes.rates(self.count, self.capacity)
        load = (self.count * self.rate) @ self.classes.on
        if self.loads and np.array_equal(load, self.loads[-1]):
            return
        self.times.append(self.now)
        self.loads.append(load)

    def solution(self) -> Solution:
        """The flows' ends and the links' load steps, closed by the last flow's end."""
        times, loads = self.times, self.loads
        if loads and not loads[-1].any():  # the last flow's end closes the last step
            loads = loads[:-1]
        else:
            times = [*times, self.now]
        return Solution(
            self.end_s, self.sent, self.done, np.array(times[: len(loads) + 1] if loads else []),
            np.array(loads, dtype=float).reshape(len(loads), len(self.capacity)),
        )
