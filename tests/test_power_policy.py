"""The power-aware policy: utility per forecast joule, among devices that can afford the round."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from hierfl.policies import select_power
from hierfl.sim.predict import RoundForecast


def fake_fleet(energy_j, seconds, remaining_j, utility, samples, deadline_s=np.inf):
    """A FleetView stand-in with hand-set forecasts (index = device)."""
    energy_j, seconds = np.asarray(energy_j, float), np.asarray(seconds, float)
    zero = np.zeros(len(energy_j))

    def forecast(devices):
        return RoundForecast(zero[devices], seconds[devices], zero[devices], energy_j[devices])

    return SimpleNamespace(
        forecast=forecast,
        remaining_j=lambda devices: np.asarray(remaining_j, float)[devices],
        utility=np.asarray(utility, float),
        samples=np.asarray(samples),
        deadline_s=deadline_s,
    )


def test_ranks_by_utility_per_joule():
    """Scores 10/1, 10/4, 6/1, 8/2 -> devices 0 and 2 for half of four."""
    fleet = fake_fleet([1, 4, 1, 2], [1] * 4, [100] * 4, [10, 10, 6, 8], [1] * 4)
    rng = np.random.default_rng(0)
    assert select_power([0, 1, 2, 3], np.ones(4), 0.5, rng, fleet=fleet) == [0, 2]


def test_skips_devices_that_cannot_afford_the_round():
    """Device 0 has 1.1 J for a 1 J round (it needs 1.2): skipped; the best affordable of the
    rest are chosen, and fewer than the quota when too few can afford it."""
    fleet = fake_fleet([1, 1, 1, 1], [1] * 4, [1.1, 9, 9, 1.0], [10, 3, 9, 2], [1] * 4)
    rng = np.random.default_rng(0)
    assert select_power([0, 1, 2, 3], np.ones(4), 0.5, rng, fleet=fleet) == [1, 2]
    assert select_power([0, 3], np.ones(4), 1.0, rng, fleet=fleet) == []


def test_skips_devices_forecast_to_miss_the_deadline():
    """A 3 s deadline: device 0 (forecast 5 s, the best score) would come late, so the two
    best of those forecast within it are chosen."""
    fleet = fake_fleet([1, 1, 1, 1], [5, 3, 2, 1], [9] * 4, [10, 8, 6, 4], [1] * 4,
                       deadline_s=3.0)
    rng = np.random.default_rng(0)
    assert select_power([0, 1, 2, 3], np.ones(4), 0.5, rng, fleet=fleet) == [1, 2]


def test_power_under_a_deadline_selects_no_straggler():
    """Under a 4 s deadline the slow board (forecast 5.1 s) is never selected by 'power', so
    nothing comes late; 'all' selects it and its update is late every round."""
    import hierfl
    from tests.test_triggers import three_boards

    deadline = {"trigger": "deadline", "deadline_s": 4.0}
    power = hierfl.run(three_boards(deadline, cloud_rounds=3,
                                    selection={"policy": "power", "fraction": 1.0}))
    assert "slow-1" not in set(power.events.loc[power.events["kind"] == "download",
                                                "node"].astype(str))
    assert int(power.rounds["updates_late"].sum()) == 0
    assert int(power.rounds["updates_used"].sum()) == 6
    everyone = hierfl.run(three_boards(deadline, cloud_rounds=3))
    assert int(everyone.rounds["updates_late"].sum()) >= 1


def test_unreported_devices_count_as_the_most_useful():
    """Device 1 never reported a loss: it scores as the best reported (9), so it beats device
    0 (utility 4) at equal joules."""
    fleet = fake_fleet([1, 1, 1], [1] * 3, [9] * 3, [4, np.nan, 9], [1] * 3)
    rng = np.random.default_rng(0)
    assert select_power([0, 1, 2], np.ones(3), 0.67, rng, fleet=fleet) == [1, 2]


def test_ties_are_broken_at_random():
    """Equal scores: over seeds, each of four devices is picked sometimes."""
    fleet = fake_fleet([1] * 4, [1] * 4, [9] * 4, [1] * 4, [1] * 4)
    picked = {d for seed in range(40)
              for d in select_power(range(4), np.ones(4), 0.25, np.random.default_rng(seed),
                                    fleet=fleet)}
    assert picked == {0, 1, 2, 3}


def test_power_runs_end_to_end_and_resumes_exactly(make_scenario, tmp_path):
    """A learning run under 'power' records each sender's utility, selects by it, and a run
    resumed from its checkpoint after round 1 equals the uninterrupted one."""
    import hierfl
    from hierfl.checkpoint import load_checkpoint
    from hierfl.sim.runner import resume, simulate

    scenario = make_scenario(
        run={"cloud_rounds": 3, "learning": True},
        selection={"policy": "power", "fraction": 0.5},
        devices=[{"profile": "mcu", "count": 3}, {"profile": "soc", "count": 3}])
    whole = hierfl.run(scenario)
    assert (whole.rounds["devices_trained"] == 3).all()
    simulate(scenario.with_overrides(["run.cloud_rounds=1"]), checkpoint_dir=tmp_path)
    state = load_checkpoint(tmp_path)
    assert np.isfinite(state["history"]["utility"].numpy()).sum() == 3
    state["scenario"] = state["scenario"].replace('"cloud_rounds": 1', '"cloud_rounds": 3')
    resumed = resume(tmp_path, state=state)
    assert resumed.events.equals(whole.events)
