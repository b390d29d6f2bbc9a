"""When each device is online and plugged in: spans of online time from a seeded model or a trace.

Every model gives each device a sequence of online spans ``[start_s, end_s)``, numbered
0, 1, 2, ...; each span is plugged in to a charger or not as a whole. The spans come from
counter-based draws, a hash of (seed, stream, device, span number) as in
``hierfl.sim.variability``, so adding a device changes no one else's spans, and a million
devices are a few numpy operations per span. A ``Cursor`` keeps, per device, the first span
that ends after the last time asked about: queries that move forward in time (the
simulation's) cost one step per span passed.

- ``always``: one span, ``[0, inf)``, never plugged.
- ``markov``: offline and online durations are exponential with means ``mean_offline_s`` and
  ``mean_online_s`` (a profile's own keys win). At time 0 a device is online with the
  stationary probability ``on / (on + off)``, its first span then lasting a fresh
  exponential (memoryless).
- ``diurnal``: device ``d`` reads a local clock ``t + offset_d``, ``offset_d`` uniform over
  ``phase_spread_h`` hours centred on 0; in local hour ``h`` of local day ``n`` it is online
  iff ``u(d, n) < online_by_hour[h]``, ``u`` uniform, drawn once per device and day. So the
  fleet's online share follows the curve, each device is online in one or a few blocks a day,
  and the blocks move from day to day.
- ``trace``: the rows of a CSV file (``hierfl.sim.availability_trace``), each row one span.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hierfl.scenario import DEFAULT_ONLINE_BY_HOUR, Scenario
from hierfl.sim.variability import _mix, _uniform

STREAM_START, STREAM_ONLINE, STREAM_OFFLINE, STREAM_PLUGGED = 21, 22, 23, 24
STREAM_PHASE, STREAM_DAY = 25, 26
HOUR_S, DAY_S = 3600.0, 86400.0
SEARCH_HOURS = 24 * 366  # a diurnal device offline this long is offline for good


def draws(seed: int, stream: int, devices: np.ndarray, counter: np.ndarray | int) -> np.ndarray:
    """Uniform draws on (0, 1), one per device, from (seed, stream, device, counter).

    >>> a = draws(3, STREAM_ONLINE, np.arange(4), 7)
    >>> bool((draws(3, STREAM_ONLINE, np.array([2]), 7) == a[2]).all())
    True
    """
    key = _mix(_mix(np.uint64(seed)) ^ np.uint64(stream))
    counter = np.asarray(counter, dtype=np.int64).astype(np.uint64)
    devices = np.asarray(devices, dtype=np.int64).astype(np.uint64)
    return _uniform(_mix(key ^ _mix(devices ^ _mix(counter))))


@dataclass(frozen=True)
class Spans:
    """Span number ``k`` of some devices: ``[start_s, end_s)``, ``plugged`` or not."""

    start_s: np.ndarray
    end_s: np.ndarray
    plugged: np.ndarray


class Model:
    """An availability model: the spans of devices, by number."""

    def first(self, devices: np.ndarray) -> Spans:
        """Span 0 of each device."""
        raise NotImplementedError

    def after(self, devices: np.ndarray, k: np.ndarray, end_s: np.ndarray) -> Spans:
        """Span ``k + 1`` of each device, whose span ``k`` ended at ``end_s``."""
        raise NotImplementedError


class Always(Model):
    """Online the whole run; never plugged in."""

    def first(self, devices: np.ndarray) -> Spans:
        n = len(devices)
        return Spans(np.zeros(n), np.full(n, np.inf), np.zeros(n, dtype=bool))

    def after(self, devices: np.ndarray, k: np.ndarray, end_s: np.ndarray) -> Spans:
        n = len(devices)
        return Spans(np.full(n, np.inf), np.full(n, np.inf), np.zeros(n, dtype=bool))


class Markov(Model):
    """Exponential online and offline spans; means per device, in seconds."""

    def __init__(
        self, seed: int, online_s: np.ndarray, offline_s: np.ndarray, plugged_probability: float
    ) -> None:
        self.seed, self.online_s, self.offline_s = seed, online_s, offline_s
        self.plugged_probability = plugged_probability

    def _duration(self, stream: int, devices: np.ndarray, k: np.ndarray, mean_s: np.ndarray):
        return -mean_s[devices] * np.log(draws(self.seed, stream, devices, k))

    def _span(self, devices: np.ndarray, k: np.ndarray, start_s: np.ndarray) -> Spans:
        end_s = start_s + self._duration(STREAM_ONLINE, devices, k, self.online_s)
        plugged = draws(self.seed, STREAM_PLUGGED, devices, k) < self.plugged_probability
        return Spans(start_s, end_s, plugged)

    def first(self, devices: np.ndarray) -> Spans:
        on, off = self.online_s[devices], self.offline_s[devices]
        online = draws(self.seed, STREAM_START, devices, 0) < on / (on + off)
        zero = np.zeros(len(devices), dtype=np.int64)
        wait_s = np.where(online, 0.0, self._duration(STREAM_OFFLINE, devices, zero,
                                                      self.offline_s))
        return self._span(devices, zero, wait_s)

    def after(self, devices: np.ndarray, k: np.ndarray, end_s: np.ndarray) -> Spans:
        following = k + 1
        start_s = end_s + self._duration(STREAM_OFFLINE, devices, following, self.offline_s)
        return self._span(devices, following, start_s)


class Diurnal(Model):
    """Online in local hour ``h`` of local day ``n`` iff ``u(d, n) < online_by_hour[h]``."""

    def __init__(
        self, seed: int, n_devices: int, online_by_hour: np.ndarray, spread_h: float,
        plugged_probability: float,
    ) -> None:
        self.seed, self.share = seed, np.asarray(online_by_hour, dtype=np.float64)
        phase = draws(seed, STREAM_PHASE, np.arange(n_devices), 0) - 0.5
        self.offset_s = phase * spread_h * HOUR_S
        self.plugged_probability = plugged_probability

    def _online(self, devices: np.ndarray, hour: np.ndarray) -> np.ndarray:
        """Whether each device is online in its local hour number ``hour`` (0: first hour)."""
        day = np.floor_divide(hour, 24)
        return draws(self.seed, STREAM_DAY, devices, day) < self.share[hour % 24]

    def _search(self, devices: np.ndarray, hour: np.ndarray, online: bool) -> np.ndarray:
        """The first local hour from ``hour`` on in which each device is (or is not) online."""
        hour = hour.copy()
        looking = np.flatnonzero(self._online(devices, hour) != online)
        for _ in range(SEARCH_HOURS):
            if not len(looking):
                return hour
            hour[looking] += 1
            found = self._online(devices[looking], hour[looking]) == online
            looking = looking[~found]
        hour = hour.astype(np.float64)
        hour[looking] = np.inf
        return hour

    def _span_from(self, devices: np.ndarray, hour: np.ndarray) -> Spans:
        """The first span that begins in local hour ``hour`` or later."""
        begin = self._search(devices, hour, True)
        finite = np.isfinite(begin)
        end = np.full(len(devices), np.inf)
        if finite.any():
            end[finite] = self._search(devices[finite], begin[finite].astype(np.int64), False)
        offset_s = self.offset_s[devices]
        plugged = np.zeros(len(devices), dtype=bool)
        plugged[finite] = draws(
            self.seed, STREAM_PLUGGED, devices[finite], begin[finite].astype(np.int64)
        ) < self.plugged_probability
        return Spans(begin * HOUR_S - offset_s, end * HOUR_S - offset_s, plugged)

    def first(self, devices: np.ndarray) -> Spans:
        hour = np.floor(self.offset_s[devices] / HOUR_S).astype(np.int64)
        return self._span_from(devices, hour)

    def after(self, devices: np.ndarray, k: np.ndarray, end_s: np.ndarray) -> Spans:
        hour = np.rint((end_s + self.offset_s[devices]) / HOUR_S).astype(np.int64)
        return self._span_from(devices, hour)


class Listed(Model):
    """Spans given as rows, grouped by device: rows ``offsets[d]:offsets[d + 1]`` are ``d``'s."""

    def __init__(
        self, offsets: np.ndarray, start_s: np.ndarray, end_s: np.ndarray, plugged: np.ndarray
    ) -> None:
        self.offsets, self.start_s, self.end_s, self.plugged = offsets, start_s, end_s, plugged

    def _row(self, devices: np.ndarray, k: np.ndarray) -> Spans:
        row = self.offsets[devices] + k
        exists = row < self.offsets[devices + 1]
        row = row[exists]
        spans = Spans(np.full(len(devices), np.inf), np.full(len(devices), np.inf),
                      np.zeros(len(devices), dtype=bool))
        spans.start_s[exists], spans.end_s[exists] = self.start_s[row], self.end_s[row]
        spans.plugged[exists] = self.plugged[row]
        return spans

    def first(self, devices: np.ndarray) -> Spans:
        return self._row(devices, np.zeros(len(devices), dtype=np.int64))

    def after(self, devices: np.ndarray, k: np.ndarray, end_s: np.ndarray) -> Spans:
        return self._row(devices, k + 1)


@dataclass(frozen=True)
class State:
    """Devices at one instant: ``online``, ``plugged`` (online and plugged in), and
    ``until_s``: when the state next changes (the span's end if online, the next span's
    start if not; inf if never)."""

    online: np.ndarray
    plugged: np.ndarray
    until_s: np.ndarray


class Cursor:
    """Per device, the first span that ends after the last instant asked about."""

    def __init__(self, model: Model, n_devices: int) -> None:
        self.model = model
        everyone = np.arange(n_devices)
        first = model.first(everyone)
        self.k = np.zeros(n_devices, dtype=np.int64)
        self.start_s, self.end_s, self.plugged = first.start_s, first.end_s, first.plugged
        self.before_s = np.full(n_devices, -np.inf)  # end of span k - 1

    def _move(self, devices: np.ndarray, spans: Spans) -> None:
        self.start_s[devices], self.end_s[devices] = spans.start_s, spans.end_s
        self.plugged[devices] = spans.plugged

    def step(self, devices: np.ndarray) -> None:
        """Move ``devices`` to their next span."""
        spans = self.model.after(devices, self.k[devices], self.end_s[devices])
        self.before_s[devices] = self.end_s[devices]
        self.k[devices] += 1
        self._move(devices, spans)

    def seek(self, devices: np.ndarray, t_s: np.ndarray | float) -> None:
        """Put each device on its first span that ends after ``t_s``."""
        t_s = np.broadcast_to(np.asarray(t_s, dtype=np.float64), devices.shape)
        back = self.before_s[devices] > t_s
        if back.any():
            rewind = devices[back]
            self._move(rewind, self.model.first(rewind))
            self.k[rewind], self.before_s[rewind] = 0, -np.inf
        behind = np.flatnonzero(self.end_s[devices] <= t_s)
        while len(behind):
            self.step(devices[behind])
            behind = behind[self.end_s[devices[behind]] <= t_s[behind]]

    def at(self, devices: np.ndarray, t_s: np.ndarray | float) -> State:
        """The state of ``devices`` at ``t_s`` (one time, or one each)."""
        self.seek(devices, t_s)
        online = self.start_s[devices] <= t_s
        until_s = np.where(online, self.end_s[devices], self.start_s[devices])
        return State(online, online & self.plugged[devices], until_s)

    def changes(
        self, devices: np.ndarray, from_s: np.ndarray, to_s: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every change of state of ``devices`` in ``(from_s, to_s]``: positions in
        ``devices``, instants, and whether each is a coming online (else going offline)."""
        to_s = np.broadcast_to(np.asarray(to_s, dtype=np.float64), devices.shape)
        self.seek(devices, from_s)
        where, when, rising = [], [], []
        going = np.arange(len(devices))
        while len(going):
            d = devices[going]
            start, end = self.start_s[d], self.end_s[d]
            for instant, up in ((start, True), (end, False)):
                hit = (instant > from_s[going]) & (instant <= to_s[going])
                where.append(going[hit])
                when.append(instant[hit])
                rising.append(np.full(int(hit.sum()), up))
            going = going[end <= to_s[going]]
            self.step(devices[going])
        return (np.concatenate(where), np.concatenate(when), np.concatenate(rising))

    def online_s(self, devices: np.ndarray, to_s: float) -> np.ndarray:
        """Seconds each device was online in ``[0, to_s]`` (restarts from span 0)."""
        fresh = Cursor(self.model, len(self.k))
        total = np.zeros(len(devices))
        going = np.arange(len(devices))
        while len(going):
            d = devices[going]
            start = np.clip(fresh.start_s[d], 0.0, to_s)
            total[going] += np.clip(fresh.end_s[d], 0.0, to_s) - start
            going = going[fresh.end_s[d] < to_s]
            fresh.step(devices[going])
        return total


def build(scenario: Scenario, profile_of: np.ndarray, profile_names, names, folder=None) -> Model:
    """The scenario's availability model over a fleet (``profile_of``: each device's profile
    number into ``profile_names``; ``names``: the devices' names, which a trace uses)."""
    config = scenario.availability
    n = len(profile_of)
    plugged = config.plugged_probability or 0.0
    if config.model == "markov":
        means = {
            key: np.array(
                [getattr(scenario.profile(p), key) or getattr(config, key) for p in profile_names],
                dtype=np.float64,
            )[profile_of]
            for key in ("mean_online_s", "mean_offline_s")
        }
        return Markov(scenario.seed, means["mean_online_s"], means["mean_offline_s"], plugged)
    if config.model == "diurnal":
        hours = np.array(config.online_by_hour or DEFAULT_ONLINE_BY_HOUR)
        spread = 2.0 if config.phase_spread_h is None else config.phase_spread_h
        return Diurnal(scenario.seed, n, hours, spread, plugged)
    if config.model == "trace":
        from hierfl.sim.availability_trace import read_trace

        return read_trace(config.path, names)
    return Always()
