"""An aggregator's flows in one direction, solved again whenever it hands out new work.

The flows of one aggregator's devices in one direction (its cell's downlink, or uplink)
share links with each other only. When all of them end before the aggregator hands out
new work (the ``all`` trigger), one ``flows.solve`` per batch is the whole story. When a
deadline or a first-k round leaves flows running as the next round's flows enter, both
must share the links as max-min says. A flow that enters at ``t`` changes no rate before
``t``, so a ``Channel`` re-plans in two steps:

- ``begin(t)``: what happened before ``t`` becomes history. Flows of the last solve that
  ended by ``t`` are fixed; those in progress keep the bytes they had left at ``t`` (the
  last solve again, every flow stopped at ``t``); those that had not begun by ``t`` are
  forgotten (their jobs are planned again, with new start times). The load steps and bytes
  before ``t`` go to the ``LinkLog``.
- ``solve(...)``: the flows a plan asks for are looked up (fixed: as they ended; in
  progress: their bytes left from ``t``) or enter as new; all flows not fixed are solved
  together from ``t``.

A plan is a pure function of the history and the work handed out: ``hierfl.sim.work``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hierfl.sim.flows import Solution, solve
from hierfl.sim.network import LinkLog


@dataclass(frozen=True)
class Flows:
    """Flows keyed by job: each sends ``size`` bytes from ``start_s`` (the solver's start:
    its byte phase, or the re-plan instant if later) over ``paths`` at most at ``cap``, and
    stops at ``stop_s``; its transfer phase began at ``phase_s``."""

    keys: np.ndarray
    phase_s: np.ndarray
    start_s: np.ndarray
    size: np.ndarray
    cap: np.ndarray
    paths: np.ndarray
    stop_s: np.ndarray

    def take(self, mask: np.ndarray) -> Flows:
        return Flows(*(getattr(self, name)[mask] for name in FIELDS))

    def __len__(self) -> int:
        return len(self.keys)


FIELDS = ("keys", "phase_s", "start_s", "size", "cap", "paths", "stop_s")


def joined(parts: list[Flows]) -> Flows:
    """The flows of ``parts``, one after another."""
    return Flows(*(np.concatenate([getattr(p, name) for p in parts]) for name in FIELDS))


class Channel:
    """One aggregator's flows in one direction, over the run's shared links."""

    def __init__(self, log: LinkLog) -> None:
        self.log = log
        self.capacity_bytes_s = log.links.capacity_bytes_s
        self.since_s = -np.inf
        self.last: Flows | None = None  # the last solve's flows, and its solution
        self.solution: Solution | None = None
        self.fixed_keys = np.zeros(0, dtype=np.int64)  # flows that ended, of open jobs
        self.fixed_end_s = np.zeros(0)
        self.fixed_done = np.zeros(0, dtype=bool)

    @property
    def idle(self) -> bool:
        """Whether nothing is kept: no solve since the last ``begin``, nothing fixed."""
        return self.last is None and not len(self.fixed_keys)

    def begin(self, t_s: float, live: np.ndarray) -> None:
        """Make everything before ``t_s`` history; keep fixed flows of ``live`` jobs only."""
        last, solution = self.last, self.solution
        self.since_s, self.last, self.solution = t_s, None, None
        if last is None:
            return
        begun = last.phase_s <= t_s
        ended = begun & (solution.end_s <= t_s)
        going = begun & ~ended
        sent = np.where(ended, solution.sent_bytes, 0.0)
        if going.any():
            stop_s = np.minimum(last.stop_s, t_s)
            at_t = solve(last.start_s, last.size, last.cap, last.paths, self.capacity_bytes_s,
                         stop_s)
            sent[going] = at_t.sent_bytes[going]
        self.log.add(solution, last.paths, sent, counted=ended, until_s=t_s)
        keep = ended & np.isin(last.keys, live)
        self._fix(last.keys[keep], solution.end_s[keep], solution.done[keep])
        if going.any():
            self.last = replace(
                last.take(going), start_s=np.maximum(last.start_s[going], t_s),
                size=last.size[going] - sent[going])

    def forget(self, keys: np.ndarray) -> None:
        """Jobs ``keys`` are committed: their fixed flows need not be kept."""
        keep = ~np.isin(self.fixed_keys, keys)
        self.fixed_keys, self.fixed_end_s, self.fixed_done = (
            self.fixed_keys[keep], self.fixed_end_s[keep], self.fixed_done[keep])

    def _fix(self, keys: np.ndarray, end_s: np.ndarray, done: np.ndarray) -> None:
        keys = np.concatenate([self.fixed_keys, keys])
        order = np.argsort(keys, kind="stable")
        self.fixed_keys = keys[order]
        self.fixed_end_s = np.concatenate([self.fixed_end_s, end_s])[order]
        self.fixed_done = np.concatenate([self.fixed_done, done])[order]

    def solve(self, asked: Flows) -> tuple[np.ndarray, np.ndarray]:
        """When each asked flow ends and whether it sent everything: fixed flows as they
        ended, the others solved together from ``since_s`` with every flow in progress."""
        end_s, done = np.full(len(asked), np.nan), np.zeros(len(asked), dtype=bool)
        fixed = _find(self.fixed_keys, asked.keys)
        found = fixed >= 0
        end_s[found], done[found] = self.fixed_end_s[fixed[found]], self.fixed_done[fixed[found]]
        going = self.last if self.last is not None else asked.take(np.zeros(len(asked), bool))
        known = _find(going.keys, asked.keys) >= 0
        fresh = asked.take(~found & ~known)
        batch = joined([going, fresh])
        if not len(batch):
            return end_s, done
        solution = solve(batch.start_s, batch.size, batch.cap, batch.paths,
                         self.capacity_bytes_s, batch.stop_s)
        self.last, self.solution = batch, solution
        where = _find(batch.keys, asked.keys)
        solved = where >= 0
        end_s[solved], done[solved] = solution.end_s[where[solved]], solution.done[where[solved]]
        return end_s, done


def _find(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Position of each ``wanted`` key in ``keys`` (unsorted is fine), -1 where absent."""
    if not len(keys):
        return np.full(len(wanted), -1)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    at = np.minimum(np.searchsorted(sorted_keys, wanted), len(keys) - 1)
    return np.where(sorted_keys[at] == wanted, order[at], -1)
