"""Round pacing: a minimum interval between cloud rounds, an end by simulated time,
evaluations at fixed simulated times, and what a selection policy may know (FleetView)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from test_resume import interrupt_after

import hierfl
from hierfl.scenario import parse_scenario
from hierfl.sim.runner import resume, simulate

ROOT = Path(__file__).parents[1]


def small(**tables) -> hierfl.Scenario:
    """Four mcu devices on two edges, tiny model, timing-only unless told."""
    raw = {
        "seed": 2,
        "run": {"cloud_rounds": 3, "learning": False},
        "model": {"name": "tiny"},
        "data": {"samples_per_device": 20},
        "topology": {"edges": 2},
        "devices": [{"profile": "mcu", "count": 4}],
    }
    for key, table in tables.items():
        raw[key] = {**raw.get(key, {}), **table} if isinstance(table, dict) else table
    return parse_scenario(raw)


def starts(result: hierfl.Result) -> list[float]:
    """When each cloud round started (its first cloud_download)."""
    downloads = result.events[result.events["kind"] == "cloud_download"]
    return downloads.groupby("cloud_round")["t_start"].min().tolist()


def test_round_interval_spaces_round_starts():
    """Rounds shorter than round_interval_s start every round_interval_s."""
    result = hierfl.run(small(run={"round_interval_s": 100.0}))
    assert starts(result) == [0.0, 100.0, 200.0]
    assert (result.rounds["sim_time_s"] - starts(result)).max() < 100.0


def test_round_interval_never_delays_a_long_round():
    """A round longer than the interval is followed at once: the next starts when it ends."""
    result = hierfl.run(small(run={"round_interval_s": 0.001}))
    ends = result.rounds["sim_time_s"].tolist()
    assert starts(result)[1:] == ends[:-1]


def test_max_sim_time_ends_the_run():
    """No cloud round starts at or after max_sim_time_s."""
    result = hierfl.run(small(run={"round_interval_s": 100.0, "max_sim_time_s": 150.0,
                                   "cloud_rounds": 10}))
    assert starts(result) == [0.0, 100.0] and len(result.rounds) == 2


def test_evaluations_at_fixed_times(tmp_path):
    """With eval_every_s the global model is evaluated at every multiple of it as well as
    after each cloud round; between two rounds the model, hence the accuracy, is unchanged."""
    scenario = small(run={"learning": True, "round_interval_s": 50.0, "eval_every_s": 20.0})
    result = hierfl.run(scenario)
    evaluations = result.evaluations
    timed = evaluations[evaluations["trigger"] == "interval"]
    assert timed["sim_time_s"].tolist() == [20.0, 40.0, 60.0, 80.0, 100.0]
    after = evaluations[evaluations["trigger"] == "round"]
    assert after["accuracy"].tolist() == result.rounds["accuracy"].tolist()
    at_40 = timed.iloc[1]
    assert at_40["cloud_rounds_done"] == 1
    assert at_40["accuracy"] == result.rounds["accuracy"].iloc[0]
    out = result.write(tmp_path / "run")
    pd.testing.assert_frame_equal(hierfl.results.read_result(out).evaluations, evaluations)


def test_no_evaluations_file_without_eval_every():
    """evaluations.csv is written only for runs that ask for timed evaluations."""
    assert small(run={"learning": True}).run.eval_every_s is None
    assert hierfl.run(small(run={"learning": True})).evaluations is None


def test_resume_with_availability_and_pacing_equals_uninterrupted(tmp_path):
    """Stopping after round 1 and resuming a markov, charging, paced, evaluated run gives the
    same events, rounds, devices and evaluations."""
    scenario = small(
        run={"learning": True, "cloud_rounds": 4, "round_interval_s": 30.0,
             "eval_every_s": 7.0, "max_wait_s": 60.0},
        availability={"model": "markov", "mean_online_s": 20.0, "mean_offline_s": 20.0,
                      "plugged_probability": 0.5},
        profiles={"mcu": {"charge_w": 0.5}},
    )
    whole = simulate(scenario)
    interrupt_after(scenario, tmp_path, 1)
    again = resume(tmp_path)
    kinds = set(whole.events["kind"].astype(str))
    assert {"offline", "online", "charge"} <= kinds
    for name in ("events", "rounds", "devices", "evaluations"):
        pd.testing.assert_frame_equal(getattr(whole, name), getattr(again, name))


def test_policy_with_fleet_keyword_sees_the_fleet():
    """A policy taking ``fleet`` gets a FleetView: who is online, batteries, profiles, samples,
    and each device's last round (from the model's send to its upload's end)."""
    seen = []

    def spy(candidates, battery, fraction, rng, *, fleet):
        seen.append((list(candidates), fleet.now_s, fleet.last_round_s.copy(),
                     fleet.online(np.asarray(candidates)), fleet.plugged(np.asarray(candidates)),
                     fleet.profile(candidates[0]).compute_mflops,
                     fleet.profile_names(candidates).tolist(), fleet.mean_round_s.copy()))
        return list(candidates)

    result = hierfl.run(small(), selection=spy)
    events = result.events
    first = events[events["cloud_round"] == 0]
    download = first[first["kind"] == "download"].set_index("node")["t_start"]
    upload = first[first["kind"] == "upload"].set_index("node")["t_end"]
    candidates, now_s, last_s, online, plugged, mflops, names, mean_s = seen[2]
    assert online.all() and not plugged.any() and mflops == 100 and set(names) == {"mcu"}
    for device in candidates:
        name = f"mcu-{device}"
        assert last_s[device] == upload[name] - download[name]
    assert np.isnan(seen[0][2]).all()
    assert np.allclose(mean_s[candidates], last_s[candidates])


def test_oort_prefers_fast_devices(monkeypatch):
    """The Oort example: once every device is timed it fills its exploit seats with the
    highest samples x (T / duration)^2, T the median duration."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    sys.modules.pop("oort", None)
    from oort import oort

    class Fleet:
        last_round_s = np.array([10.0, 20.0, 40.0, 10.0])
        samples = np.array([10, 10, 10, 5])

    # T = median(10, 20, 40, 10) = 15: penalties 1, (15/20)^2, (15/40)^2, 1
    # utilities 10, 5.625, 1.406, 5: the two seats go to 0 and 1
    chosen = oort([0, 1, 2, 3], None, 0.5, np.random.default_rng(0), fleet=Fleet())
    assert chosen == [0, 1]


def test_oort_runs_from_a_scenario(monkeypatch):
    """``policy = "oort:oort"`` runs, explores beyond its first round's picks, and trains the
    fast profile more often than the slow one."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    sys.modules.pop("oort", None)
    scenario = small(
        run={"cloud_rounds": 12},
        topology={"edges": 1},
        selection={"policy": "oort:oort", "fraction": 0.5},
        devices=[{"profile": "mcu", "count": 4}, {"profile": "soc", "count": 4}],
    )
    devices = hierfl.run(scenario).devices
    trained = devices.groupby("profile")["rounds_trained"].sum()
    assert (devices["rounds_trained"] > 0).sum() > 4  # round 0 selects 4 of the 8
    assert trained["soc"] > trained["mcu"]


def test_a_fleet_that_can_never_train_reports_one_empty_round():
    """require_plugged with no device ever plugged in: nobody can ever be selected, yet the
    run reports its first round (closed at once, nothing trained) instead of failing."""
    import hierfl
    from hierfl.scenario import parse_scenario
    from tests.conftest import small_raw

    result = hierfl.run(parse_scenario(small_raw(
        selection={"policy": "all", "fraction": 1.0, "min_battery": 0.0, "require_plugged": True},
        availability={"model": "markov", "mean_online_s": 10.0, "mean_offline_s": 10.0})))
    assert result.rounds["cloud_round"].tolist() == [0]
    assert result.rounds["devices_trained"].tolist() == [0]
    assert not (result.events["kind"] == "download").any()
