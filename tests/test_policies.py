"""Selection policies: quotas, all / random / battery, custom callables, min_battery."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import hierfl
from hierfl.errors import ScenarioError
from hierfl.policies import (
    BATTERY_BUCKET,
    POLICIES,
    apportion,
    battery_bucket,
    fleet_seats,
    quota,
    resolve_selection,
    seat_share,
    select_all,
    select_battery,
    select_random,
)


def test_quota():
    """A fraction selects floor(fraction * n), at least one when there are candidates."""
    assert quota(0.5, 10) == 5
    assert quota(0.5, 3) == 1  # floor(1.5)
    assert quota(0.3, 10) == 3
    assert quota(0.1, 3) == 1  # floor(0.3) = 0, raised to one
    assert quota(1.0, 7) == 7
    assert quota(0.5, 0) == 0
    assert quota(0.29, 100) == 29  # 0.29 * 100 is 28.999999999999996 in floats
    assert quota(0.57, 100) == 57  # 0.57 * 100 is 56.99999999999999 in floats
    assert quota(0.0, 5) == 0  # an edge with no seat this round


def test_select_all_ignores_fraction():
    """'all' returns every candidate whatever the fraction."""
    rng = np.random.default_rng(0)
    assert select_all([4, 1, 7], np.ones(8), 0.1, rng) == [4, 1, 7]


def test_select_battery_picks_highest_fraction():
    """'battery' keeps the fraction with most battery left, returned in index order."""
    battery = np.array([0.2, 0.9, 0.5, 0.95, 0.1, 0.6])
    rng = np.random.default_rng(0)
    # quota(0.5, 6) = 3: the three fullest are 3 (0.95), 1 (0.9), 5 (0.6)
    assert select_battery(range(6), battery, 0.5, rng) == [1, 3, 5]
    # only candidates count: among 0, 2, 4 the fullest is 2
    assert select_battery([0, 2, 4], battery, 0.34, rng) == [2]


def test_battery_buckets_round_up_to_whole_percent():
    """Batteries are compared in 1% buckets, rounded up: a full and a nearly full battery tie."""
    assert BATTERY_BUCKET == 0.01
    levels = np.array([1.0, 1 - 1e-7, 0.9901, 0.99, 0.985, 0.0])
    assert battery_bucket(levels).tolist() == [100, 100, 100, 99, 99, 0]


def test_select_battery_ignores_noise_level_differences():
    """Devices 1e-7 apart are one bucket: the seeded tie-break decides, not the noise."""
    noisy = np.array([1.0, 1 - 1e-7, 1 - 2e-7, 1 - 3e-7])
    flat = np.ones(4)
    for seed in range(10):
        picked = select_battery(range(4), noisy, 0.5, np.random.default_rng(seed))
        same = select_battery(range(4), flat, 0.5, np.random.default_rng(seed))
        assert picked == same
    draws = {tuple(select_battery(range(4), noisy, 0.5, np.random.default_rng(s)))
             for s in range(30)}
    assert len(draws) > 1, "ties must not always go to the same devices"


def test_select_battery_breaks_ties_by_a_seeded_shuffle():
    """Within a bucket the order is rng.permutation of the candidates; a fuller bucket first."""
    battery = np.array([0.5, 0.8, 0.8, 0.8, 0.8])
    candidates = [4, 3, 2, 1, 0]
    shuffled = np.array(candidates)[np.random.default_rng(7).permutation(5)]
    expected = sorted(int(d) for d in [d for d in shuffled if d != 0][:2])
    assert select_battery(candidates, battery, 0.4, np.random.default_rng(7)) == expected
    # the 0.5 device ranks below every 0.8 device whatever the shuffle
    for seed in range(20):
        assert 0 not in select_battery(candidates, battery, 0.8, np.random.default_rng(seed))


def test_apportion_largest_remainder():
    """Seats go floor(seats * w / sum w), then one each to the largest remainders.

    10 seats over 3 edges of 6, 3 and 1 devices: exact shares 6, 3, 1; 5 seats over 10, 7, 3:
    2.5, 1.75, 0.75 -> floors 2, 1, 0 and the two seats left to 0.75 and 0.5: 3, 2, 0.
    """
    assert apportion(10, [6, 3, 1], np.arange(3)).tolist() == [6, 3, 1]
    assert apportion(5, [10, 7, 3], np.arange(3)).tolist() == [2, 2, 1]
    assert apportion(0, [4, 4], np.arange(2)).tolist() == [0, 0]
    assert apportion(3, [0, 0], np.arange(2)).tolist() == [0, 0]
    # equal remainders: the order decides
    assert apportion(2, [1, 1, 1, 1], np.array([3, 1, 0, 2])).tolist() == [0, 1, 0, 1]


@given(
    seats_share=st.floats(0.0, 1.0),
    weights=st.lists(st.integers(0, 50), min_size=1, max_size=12),
    seed=st.integers(0, 2**16),
)
def test_apportion_hands_out_every_seat_within_one_of_the_exact_share(seats_share, weights, seed):
    """Hamilton's method: all seats given, each party within one seat of its exact share."""
    total = sum(weights)
    seats = int(seats_share * total)
    order = np.random.default_rng(seed).permutation(len(weights))
    given = apportion(seats, weights, order)
    assert given.sum() == (seats if total else 0)
    for party, weight in zip(given, weights, strict=True):
        exact = seats * weight / total if total else 0
        assert exact - 1 < party < exact + 1


def test_fleet_seats_select_the_fleet_fraction():
    """fraction 0.5 over 4 edges of 5 trains 10 devices (floor per edge would train 8)."""
    for seed in range(5):
        seats = fleet_seats(0.5, [5, 5, 5, 5], np.random.default_rng(seed))
        assert seats.sum() == 10
        assert sorted(seats.tolist()) == [2, 2, 3, 3]
    # 0.1 of 10 edges of 5 is 5 devices, not one per edge
    assert fleet_seats(0.1, [5] * 10, np.random.default_rng(0)).sum() == 5
    # at least one device when any is eligible
    assert fleet_seats(0.01, [3, 2], np.random.default_rng(0)).sum() == 1


def test_seat_share_gives_the_policy_its_seats():
    """quota(seat_share(s, n), n) == min(s, n): the policy selects exactly the edge's seats."""
    for candidates in range(0, 40):
        for seats in range(0, 45):
            expected = min(seats, candidates)
            assert quota(seat_share(seats, candidates), candidates) == expected


def test_edge_count_does_not_change_how_many_train(make_scenario):
    """The same fleet and fraction trains the same number of devices on 1, 2 or 4 edges."""
    trained = {}
    for edges in (1, 2, 4):
        scenario = make_scenario(
            selection={"policy": "random", "fraction": 0.5},
            topology={"edges": edges},
            devices=[{"profile": "mcu", "count": 20}],
            run={"cloud_rounds": 2, "learning": False},
        )
        trained[edges] = hierfl.run(scenario).rounds["devices_trained"].tolist()
    assert trained == {1: [10, 10], 2: [10, 10], 4: [10, 10]}


def test_select_random_is_reproducible_from_the_rng():
    """'random' draws quota(fraction, n) distinct candidates from the given generator only."""
    candidates = list(range(10, 30))
    battery = np.ones(30)
    first = select_random(candidates, battery, 0.25, np.random.default_rng(5))
    again = select_random(candidates, battery, 0.25, np.random.default_rng(5))
    assert first == again
    assert len(first) == 5 and len(set(first)) == 5
    assert set(first) <= set(candidates)
    assert first == sorted(first)
    draws = {tuple(select_random(candidates, battery, 0.25, np.random.default_rng(s)))
             for s in range(20)}
    assert len(draws) > 1, "different generators should give different selections"


def test_select_random_matches_rng_choice():
    """The random pick is exactly rng.choice(n, quota, replace=False) mapped to candidates."""
    candidates = [3, 5, 8, 13, 21, 34]
    picked = np.random.default_rng(11).choice(6, size=3, replace=False)
    expected = sorted(candidates[int(k)] for k in picked)
    assert select_random(candidates, np.ones(40), 0.5, np.random.default_rng(11)) == expected


def test_resolve_selection_by_name_and_callable():
    """Names resolve to the built-ins; a callable is used as is."""
    for name, policy in POLICIES.items():
        assert resolve_selection(name) is policy

    def mine(candidates, battery, fraction, rng):
        return list(candidates)[:1]

    assert resolve_selection(mine) is mine


def test_resolve_selection_by_import_path(tmp_path, monkeypatch):
    """'package.module:function' loads a function; a missing one is a ScenarioError."""
    (tmp_path / "my_policies.py").write_text(textwrap.dedent(
        """
        def first_only(candidates, battery, fraction, rng):
            return list(candidates)[:1]

        NOT_CALLABLE = 3
        """
    ))
    monkeypatch.syspath_prepend(str(tmp_path))
    policy = resolve_selection("my_policies:first_only")
    assert policy([4, 5], np.ones(6), 1.0, np.random.default_rng(0)) == [4]
    with pytest.raises(ScenarioError, match="selection.policy"):
        resolve_selection("my_policies:missing")
    with pytest.raises(ScenarioError, match="selection.policy"):
        resolve_selection("my_policies:NOT_CALLABLE")
    with pytest.raises(ScenarioError, match="selection.policy"):
        resolve_selection("no_such_module_xyz:f")


def test_custom_policy_in_a_run(tmp_path, monkeypatch, make_scenario):
    """A scenario naming a custom policy runs with it: only the device it picks trains."""
    (tmp_path / "pick_last.py").write_text(
        "def pick_last(candidates, battery, fraction, rng):\n"
        "    return [max(candidates)]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    scenario = make_scenario(selection={"policy": "pick_last:pick_last"},
                             devices=[{"profile": "mcu", "count": 3}])
    result = hierfl.run(scenario)
    assert result.devices["rounds_trained"].tolist() == [0, 0, 2]
    downloads = result.events[result.events["kind"] == "download"]
    assert set(downloads["node"].astype(str)) == {"mcu-2"}


def test_min_battery_excludes_drained_devices(make_scenario, weak_profile):
    """A device below min_battery is not selected in later rounds.

    The weak board holds 1 mAh at 2.5 V = 9 J. One round costs it
    0.3 * 1.49704 + 0.2 * 0.0211968 + 0.95 * 1.49704 = 1.87553936 J, leaving
    1 - 1.87553936 / 9 = 0.7916 of its battery: below 0.8, so it sits out round 2.
    """
    weak = {**weak_profile, "battery_mah": 1.0}
    scenario = make_scenario(
        selection={"min_battery": 0.8},
        devices=[{"profile": "weak", "count": 1}, {"profile": "mcu", "count": 1}],
        profiles={"weak": weak},
    )
    result = hierfl.run(scenario)
    devices = result.devices.set_index("device")
    assert devices.at["weak-0", "rounds_trained"] == 1
    assert devices.at["mcu-1", "rounds_trained"] == 2
    assert devices.at["weak-0", "battery"] == pytest.approx(1 - 1.87553936 / 9, rel=1e-9)
    assert not devices.at["weak-0", "dropped"]
