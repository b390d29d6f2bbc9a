"""Aggregation triggers: the ``[aggregation]`` keys, and what each trigger does to a round."""

from __future__ import annotations

import pytest

from hierfl.errors import ScenarioError
from hierfl.scenario import parse_scenario
from tests.conftest import small_raw


def scenario_error(aggregation: dict, **sections) -> str:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(small_raw(aggregation=aggregation, **sections))
    return str(caught.value)


def test_defaults_wait_for_everyone():
    """Without an [aggregation] table, edges and the cloud wait for all."""
    aggregation = parse_scenario(small_raw()).aggregation
    assert (aggregation.trigger, aggregation.cloud_trigger) == ("all", "all")
    assert aggregation.overcommit == 1.3 and aggregation.staleness_exponent == 0.5


@pytest.mark.parametrize(
    ("aggregation", "shown"),
    [
        ({"trigger": "deadline", "deadline_s": 5.0, "k": 1},
         "aggregation.k: only with trigger = 'first_k', not with trigger = 'deadline'"),
        ({"trigger": "first_k", "k": 1, "deadline_s": 5.0},
         "aggregation.deadline_s: only with trigger = 'deadline'"),
        ({"overcommit": 2.0}, "aggregation.overcommit: only with trigger = 'first_k'"),
        ({"trigger": "deadline", "max_staleness": 2},
         "aggregation.max_staleness: only with trigger = 'buffered' or cloud_trigger = "
         "'buffered'"),
        ({"trigger": "deadline"}, "aggregation.deadline_s: required with trigger = 'deadline'"),
        ({"trigger": "first_k"}, "aggregation.k: required with trigger = 'first_k'"),
        ({"trigger": "buffered", "buffer": 2},
         "aggregation.concurrency: required with trigger = 'buffered'"),
        ({"cloud_trigger": "buffered"},
         "aggregation.cloud_buffer: required with cloud_trigger = 'buffered'"),
        ({"trigger": "first_k", "k": 3}, "aggregation.k: must be <= the fleet's 2 devices: 3"),
        ({"trigger": "deadline", "deadline_s": -1.0}, "aggregation.deadline_s: must be > 0"),
        ({"cloud_trigger": "deadline", "cloud_deadline_s": 0.0},
         "aggregation.cloud_deadline_s: must be > 0"),
        ({"trigger": "first_k", "k": 1, "overcommit": 0.5},
         "aggregation.overcommit: must be >= 1"),
        ({"trigger": "soon"}, "aggregation.trigger"),
    ],
)
def test_bad_aggregation_is_one_line_naming_the_key(aggregation, shown):
    """A key with the wrong trigger, a missing required key, k above the fleet, a negative
    duration: one line that names the key."""
    message = scenario_error(aggregation)
    assert shown in message and "\n" not in message


def test_cloud_trigger_needs_a_hierarchy():
    """In cloud_only the cloud aggregates the devices: only the edge trigger applies."""
    message = scenario_error(
        {"cloud_trigger": "deadline", "cloud_deadline_s": 3.0},
        topology={"mode": "cloud_only", "edges": 1},
    )
    assert "aggregation.cloud_trigger: needs topology.mode = 'hierarchical'" in message


def test_resolved_scenario_reads_back():
    """A resolved scenario (defaults written out) validates again unchanged: the defaults of
    keys another trigger reads are not 'given'."""
    scenario = parse_scenario(small_raw(aggregation={"trigger": "first_k", "k": 2}))
    again = parse_scenario(scenario.to_dict())
    assert again == scenario
    plain = parse_scenario(small_raw())
    assert parse_scenario(plain.to_dict()) == plain


@pytest.mark.parametrize(
    "aggregation",
    [{"trigger": "buffered", "concurrency": 2, "buffer": 1},
     {"cloud_trigger": "buffered", "cloud_buffer": 1}],
)
def test_unsimulated_trigger_is_refused(aggregation):
    """A trigger the engine does not play yet is refused before anything runs."""
    from hierfl.sim.engine import prepare

    with pytest.raises(ScenarioError, match="is not simulated yet"):
        prepare(parse_scenario(small_raw(aggregation=aggregation)))
