"""The flow solver on hand-computed cases: max-min rates, entries, finishes and stops."""

import numpy as np
import pytest

from hierfl.sim.flows import max_min_rates, solve


def test_lone_flow_runs_at_its_cap():
    """Without contention a flow takes size / cap after its start."""
    s = solve(np.array([0.5]), np.array([1000.0]), np.array([100.0]), np.full((1, 1), -1),
              np.zeros(0) + 1.0)
    assert s.end_s.tolist() == [10.5] and s.done.tolist() == [True]
    assert s.sent_bytes.tolist() == [1000.0]


def test_two_flows_share_a_link_from_their_starts():
    """A second flow halves the first one's rate while both send."""
    s = solve(np.array([0.0, 1.0]), np.array([4.0, 1.0]), np.array([4.0, 4.0]),
              np.array([[0], [0]]), np.array([2.0]))
    # [0,1): A at 2 (2 B); [1,2): 1 each, B done; [2,2.5): A at 2 sends its last byte
    assert s.end_s.tolist() == [2.5, 2.0]


def test_three_flows_with_caps_and_a_late_start():
    """A capped flow leaves its share to the others; a late flow splits what is left."""
    s = solve(np.array([0.0, 0.0, 2.0]), np.array([10.0, 100.0, 20.0]),
              np.array([5.0, 100.0, 100.0]), np.array([[0], [0], [0]]), np.array([30.0]))
    # [0,2): A 5 (cap), B 25 -> A done at 2, B 50 B; [2,10/3): B, C 15 each -> C done;
    # B then 30 B/s for its last 30 B.
    np.testing.assert_allclose(s.end_s, [2.0, 2 + 4 / 3 + 1, 2 + 4 / 3])
    np.testing.assert_allclose(s.load_bytes_s[:, 0], 30.0)
    np.testing.assert_allclose(s.times_s[[0, -1]], [0.0, 2 + 4 / 3 + 1])


def test_core_bottleneck_beside_a_radio_bottleneck():
    """One flow is held by the shared core, the other by its own radio."""
    paths = np.array([[0, 2], [1, 2]])  # cell 0, cell 1, core
    rates = max_min_rates(np.array([100.0, 2.0]), paths, np.array([1000.0, 1000.0, 10.0]))
    assert rates.tolist() == [8.0, 2.0]


def test_the_tighter_link_freezes_first():
    """Progressive filling: link 1 saturates first; link 0 gives its rest to its other flow."""
    paths = np.array([[0, 1], [0, -1], [1, -1]])
    rates = max_min_rates(np.full(3, np.inf), paths, np.array([10.0, 4.0]))
    assert rates.tolist() == [2.0, 8.0, 2.0]


def test_a_stopped_sender_frees_its_share():
    """A flow that stops (empty battery) ends then, with the bytes sent so far."""
    s = solve(np.zeros(2), np.array([100.0, 100.0]), np.full(2, 10.0), np.zeros((2, 1), int),
              np.array([10.0]), stop_s=np.array([3.0, np.inf]))
    assert s.end_s.tolist() == [3.0, 11.5]
    assert s.sent_bytes.tolist() == [15.0, 100.0] and s.done.tolist() == [False, True]


def test_a_flow_stopped_before_its_start_sends_nothing():
    """A sender that dies before its byte phase ends there with 0 bytes."""
    s = solve(np.array([5.0]), np.array([10.0]), np.array([1.0]), np.full((1, 1), -1),
              np.array([1.0]), stop_s=np.array([2.0]))
    assert s.end_s.tolist() == [2.0] and s.sent_bytes.tolist() == [0.0]
    assert not s.done[0]


def test_equal_flows_finish_together():
    """Flows of one class with equal sizes and starts end at one instant."""
    s = solve(np.zeros(1000), np.full(1000, 8.0), np.full(1000, 1.0), np.zeros((1000, 1), int),
              np.array([100.0]))
    assert set(s.end_s.tolist()) == {80.0}


@pytest.mark.parametrize("capacity", [0.0, -1.0])
def test_capacity_must_be_positive(capacity):
    """A link without capacity would never let a flow end."""
    with pytest.raises(ValueError, match="> 0"):
        solve(np.zeros(1), np.ones(1), np.ones(1), np.zeros((1, 1), int), np.array([capacity]))


def test_no_flows():
    """An empty set of flows solves to empty arrays."""
    s = solve(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 1), int), np.array([1.0]))
    assert len(s.end_s) == 0 and len(s.times_s) == 0
