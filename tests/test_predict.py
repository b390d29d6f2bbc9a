"""The server's forecast of a device's round: exact when nothing contends, a bound otherwise."""

from __future__ import annotations

import numpy as np
import pytest

import hierfl
from hierfl.sim.engine import prepare
from hierfl.sim.predict import forecast_round


def phase_rows(result: hierfl.Result, device: str) -> dict[str, float]:
    """Seconds of each phase and joules of the first round of ``device``."""
    events = result.events
    mine = events[(events["node"].astype(str) == device) & (events["cloud_round"] == 0)]
    kinds = mine["kind"].astype(str)
    seconds = {k: float((mine["t_end"] - mine["t_start"])[kinds == k].sum())
               for k in ("download", "compute", "upload")}
    seconds["energy_j"] = float(mine.loc[kinds.isin(
        ["download", "compute", "upload", "tail"]), "energy_j"].sum())
    return seconds


@pytest.mark.parametrize("mode", ["hierarchical", "cloud_only"])
def test_forecast_equals_an_uncontended_round(make_scenario, mode):
    """One mcu and one soc, each alone on its path (no cell, no variability): the forecast's
    phases and energy are those the simulation plays, tail included (the next phase of the
    next round starts long after the tail has ended)."""
    scenario = make_scenario(run={"cloud_rounds": 2},
                             topology={"mode": mode, "edges": 2},
                             devices=[{"profile": "mcu", "count": 1},
                                      {"profile": "soc", "count": 1}])
    result = hierfl.run(scenario)
    forecast = forecast_round(prepare(scenario), np.arange(2))
    for k, name in enumerate(result.devices["device"].astype(str)):
        played = phase_rows(result, name)
        assert forecast.download_s[k] == pytest.approx(played["download"], rel=1e-12)
        assert forecast.compute_s[k] == pytest.approx(played["compute"], rel=1e-12)
        assert forecast.upload_s[k] == pytest.approx(played["upload"], rel=1e-12)
        assert forecast.energy_j[k] == pytest.approx(played["energy_j"], rel=1e-9)
    assert np.all(forecast.seconds == forecast.download_s + forecast.compute_s
                  + forecast.upload_s)


def test_forecast_is_a_lower_bound_under_contention(make_scenario):
    """20 mcu behind a 1 Mbit/s cell share it at 50 kbps each: the uncontended forecast
    (their own 100 kbps) is shorter than the round they play."""
    cell = {"bandwidth_kbps": 1000, "latency_ms": 5}
    scenario = make_scenario(run={"cloud_rounds": 1}, topology={"edges": 1, "cell": cell},
                             devices=[{"profile": "mcu", "count": 20}])
    result = hierfl.run(scenario)
    forecast = forecast_round(prepare(scenario), np.arange(20))
    played = phase_rows(result, str(result.devices["device"].iloc[0]))
    assert forecast.download_s[0] < played["download"]
    assert forecast.download_s[0] == pytest.approx(0.055 + 18_088 / 12_500)
