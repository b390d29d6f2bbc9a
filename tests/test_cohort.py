"""Cohorts: the same tables as one process per device, and the parts they rest on."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from hypothesis import given
from hypothesis import strategies as st

import hierfl
from hierfl.policies import select_battery
from hierfl.scenario import DeviceGroup
from hierfl.sim import cohort
from hierfl.sim.battery import FleetBattery, Fractions
from hierfl.topology import device_names, interleave_groups
from hierfl.trace import COLUMNS, EVENT_DTYPE, KINDS, Trace, event_order

TABLES = ("events", "rounds", "devices")


def assert_same_tables(fast: hierfl.Result, slow: hierfl.Result) -> None:
    for table in TABLES:
        pd.testing.assert_frame_equal(getattr(fast, table), getattr(slow, table),
                                      check_exact=True, obj=table)


def test_selection_draws_do_not_depend_on_other_edges():
    """Each edge round draws from its own stream: adding an edge changes no other's choice."""
    raw = {"seed": 3, "run": {"cloud_rounds": 2, "learning": False},
           "selection": {"policy": "random", "fraction": 0.5},
           "topology": {"edges": 2, "assign": "block"},
           "devices": [{"profile": "mobile", "count": 8}]}
    two = hierfl.run(hierfl.parse_scenario(raw)).events
    raw["topology"]["edges"], raw["devices"][0]["count"] = 3, 12  # edges 0, 1 keep 0-3, 4-7

    three = hierfl.run(hierfl.parse_scenario(raw)).events

    def chosen(events: pd.DataFrame) -> list[tuple[int, int]]:
        downloads = events[(events["kind"] == "download") & (events["edge"] != "edge-2")]
        numbers = downloads["node"].astype(str).str.split("-").str[1].astype(int)
        return sorted(zip(downloads["cloud_round"], numbers, strict=True))

    assert len(chosen(two)) == 8
    assert chosen(two) == chosen(three)


def test_cohort_arrivals_act_as_updates():
    """Arrivals index, slice and count like a list of Updates, without storing one each."""
    arrivals = cohort.Arrivals(np.array([4, 9]), np.array([40, 20]))
    assert len(arrivals) == 2 and bool(arrivals)
    assert [(u.sender, u.payload, u.samples) for u in arrivals] == [(4, None, 40), (9, None, 20)]
    assert cohort.samples_of(arrivals) == 60 and cohort.senders_of(arrivals[1:]).tolist() == [9]
    assert cohort.samples_of(list(arrivals)) == 60


# ----- trace


def random_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Events with many ties on every sort key."""
    rows = np.zeros(n, dtype=EVENT_DTYPE)
    rows["t_start"] = rng.integers(0, 4, n) * 0.5
    rows["t_end"] = rows["t_start"] + rng.integers(0, 3, n)
    rows["kind"] = rng.integers(0, len(KINDS), n)
    rows["node"] = rng.integers(0, 5, n)
    rows["edge"] = rng.integers(-1, 3, n)
    rows["cloud_round"] = rng.integers(0, 2, n)
    rows["edge_round"] = rng.integers(-1, 2, n)
    rows["bytes"] = np.arange(n)  # tells rows apart
    rows["energy_j"] = rng.random(n)
    return rows


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 200))
def test_event_order_is_a_stable_sort_by_six_keys(seed, n):
    """event_order equals a stable lexsort by start, node, kind, end, cloud and edge round."""
    rows = random_rows(np.random.default_rng(seed), n)
    keys = ("edge_round", "cloud_round", "t_end", "kind", "node", "t_start")
    assert event_order(rows).tolist() == np.lexsort([rows[k] for k in keys]).tolist()


def fill(trace: Trace, rows: np.ndarray, bulk: bool) -> None:
    for row in rows:
        values = [row[name].item() for name in COLUMNS]
        values[2] = KINDS[values[2]]
        t_start, t_end, kind, node, edge_, cloud_round, edge_round, nbytes, energy = values
        if bulk:
            trace.extend(kind, np.array([node]), edge_, t_start, t_end, cloud_round,
                         edge_round, np.array([nbytes]), energy)
        else:
            trace.record(kind, node, edge_, t_start, t_end, cloud_round, edge_round, nbytes,
                         energy)


def test_extend_records_like_record():
    """Bulk columns and one-by-one records store the same rows, across many blocks."""
    rows = random_rows(np.random.default_rng(1), 3000)
    one, bulk = Trace(["n"] * 5, capacity=16), Trace(["n"] * 5, capacity=16)
    fill(one, rows, bulk=False)
    fill(bulk, rows, bulk=True)
    assert len(one) == len(bulk) == 3000
    assert one.rows.tobytes() == bulk.rows.tobytes() == rows.tobytes()


def test_extend_columns_and_scalars_split_over_blocks():
    """A bulk append larger than the room left fills the block, then a new one; scalars repeat."""
    trace = Trace(["cloud", "edge-0", "d0", "d1", "d2"], capacity=4)
    trace.record("skip", 2, 1, 0.0, 0.0, 0)
    trace.extend("upload", np.array([2, 3, 4] * 3), 1, np.arange(9.0), np.arange(9.0) + 1, 0,
                 0, 100, np.full(9, 0.5))
    rows = trace.rows
    assert len(trace) == 10 and rows["node"].tolist() == [2] + [2, 3, 4] * 3
    assert rows["bytes"].tolist() == [0] + [100] * 9 and (rows["edge"] == 1).all()
    assert trace.nbytes <= 1.25 * len(trace) * EVENT_DTYPE.itemsize + 4 * EVENT_DTYPE.itemsize


def test_trace_storage_stays_near_one_row_per_event():
    """Blocks never hold more than a quarter of the events as spare room (49-byte rows)."""
    trace = Trace(["n"])
    for k in range(2000):
        trace.extend("compute", np.zeros(k % 700 + 1, dtype=np.int64), -1, 0.0, 1.0, 0)
        assert trace.nbytes <= max(1.25 * len(trace), len(trace) + 1024) * 49


def test_to_frame_does_not_depend_on_recording_order():
    """Shuffling the recording order gives the very same events table."""
    rows = random_rows(np.random.default_rng(2), 500)
    rows["t_end"] = rows["t_start"] + np.arange(500)  # no full ties
    first, second = Trace([f"n{k}" for k in range(5)]), Trace([f"n{k}" for k in range(5)])
    first.load({name: rows[name] for name in COLUMNS})
    shuffled = rows[np.random.default_rng(3).permutation(500)]
    second.load({name: shuffled[name] for name in COLUMNS})
    pd.testing.assert_frame_equal(first.to_frame(), second.to_frame(), check_exact=True)


# ----- battery, policies, topology


def test_draw_many_equals_draws_one_by_one():
    """Drawing a phase for several devices at once matches drawing for each in turn."""
    capacity, power = np.array([10.0, 1.0, np.inf, 0.5]), np.array([0.5, 2.0, 5.0, 0.0])
    together, alone = FleetBattery(capacity, np.zeros(4)), FleetBattery(capacity, np.zeros(4))
    lasted = together.draw_many(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]), 3.0, power, "tx")
    each = [alone.draw(d, 1.0 + d, 3.0, power[d], "tx") for d in range(4)]
    assert lasted.tolist() == each == [3.0, 0.5, 3.0, 3.0]
    for name in ("remaining_j", "settled_s", "alive", "used_j"):
        np.testing.assert_array_equal(getattr(together, name), getattr(alone, name))
    assert together.died_s[1] == 2.5 and np.isnan(together.died_s[[0, 2, 3]]).all()


def test_idle_deaths_take_one_instant_per_device():
    """Idle drain settles each device to its own instant; deaths come back as a mask."""
    battery = FleetBattery(np.array([10.0, 10.0, 10.0]), np.array([1.0, 1.0, 0.0]))
    died = battery.idle_deaths(np.array([2, 0, 1]), np.array([100.0, 4.0, 30.0]))
    assert died.tolist() == [False, False, True]
    assert battery.remaining_j.tolist() == [6.0, 0.0, 10.0]
    assert battery.died_s[1] == 10.0 and battery.settled_s.tolist() == [4.0, 10.0, 100.0]


def test_fractions_view_reads_like_the_array():
    """The policies' view indexes, iterates and converts like ``battery.fractions()``."""
    battery = FleetBattery(np.array([10.0, np.inf, 4.0]), np.zeros(3))
    battery.remaining_j[[0, 2]] = [5.0, 1.0]
    view, whole = Fractions(battery), battery.fractions()
    assert view[0] == 0.5 and view[np.array([2, 1])].tolist() == [0.25, 1.0]
    assert len(view) == 3 and list(view) == whole.tolist()
    np.testing.assert_array_equal(np.asarray(view), whole)
    np.testing.assert_array_equal(-view, -whole)


@given(battery=st.lists(st.sampled_from([0.0, 0.1, 0.5, 0.5, 0.995, 1.0]), min_size=1,
                        max_size=30),
       fraction=st.sampled_from([0.1, 0.3, 0.5, 1.0]), seed=st.integers(0, 99), data=st.data())
def test_select_battery_equals_ranking_by_bucket_then_shuffle(battery, fraction, seed, data):
    """The vectorised battery policy: fullest 1% bucket first, ties in the rng's shuffle order."""
    levels = np.array(battery)
    candidates = data.draw(st.lists(st.sampled_from(range(len(levels))), unique=True))
    shuffle = np.random.default_rng(seed).permutation(len(candidates)).tolist()
    dealt = [candidates[k] for k in shuffle]
    ranked = sorted(dealt, key=lambda i: (-math.ceil(100 * levels[i] - 1e-9), dealt.index(i)))
    expected = sorted(ranked[: max(1, int(fraction * len(candidates) + 1e-9))])
    picked = select_battery(candidates, levels, fraction, np.random.default_rng(seed))
    assert picked == (expected if candidates else [])


@given(counts=st.lists(st.integers(0, 5), max_size=5))
def test_interleave_groups_deals_one_per_group_in_turn(counts):
    """The vectorised interleave equals dealing one device per group, round after round."""
    groups = tuple(DeviceGroup(profile=f"p{k}", count=c) for k, c in enumerate(counts) if c)
    left, dealt = [g.count for g in groups], []
    while any(left):
        for k, group in enumerate(groups):
            if left[k]:
                left[k] -= 1
                dealt.append(group.profile)
    assert interleave_groups(groups) == dealt


def test_device_names_are_padded_to_the_fleet():
    """Names are profile-index, the index zero-padded to the width of the largest."""
    assert device_names(["a", "b"]).tolist() == ["a-0", "b-1"]
    assert device_names(["mcu"] * 100)[0] == "mcu-00"
    assert device_names(["mcu"] * 101)[-1] == "mcu-100"
    assert device_names([]).tolist() == []


def test_updates_encoded_in_chunks_equal_one_array(make_scenario, monkeypatch):
    """Encoding a cohort a few updates at a time changes no byte, event or weight."""
    from hierfl.sim import engine

    scenario = make_scenario(run={"learning": True}, compression={"quantize": "int8",
                                                                   "prune_ratio": 0.3},
                             devices=[{"profile": "mobile", "count": 7}])
    whole = hierfl.run(scenario)
    monkeypatch.setattr(engine, "ENCODE_ROWS", 2)
    chunked = hierfl.run(scenario)
    assert_same_tables(whole, chunked)
    assert all(torch.equal(whole.model[k], chunked.model[k]) for k in whole.model)
