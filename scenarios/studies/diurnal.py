"""Study: a diurnal phone fleet over 48 h of simulated time, with and without require_plugged.

Runs ``scenarios/diurnal.toml`` (40 phones online by the default 24 h curve, 70% of online
spans on a charger, a cloud round every 30 min, 48 h) twice: with the production rule
``require_plugged = true`` (only phones on a charger train) and without it (any online
phone). For each it reports the rounds that trained, the updates aggregated, accuracy over
time (``evaluations.csv``: every hour), time to the target, device energy, the energy
stored by charging, the training energy drawn from batteries (work done off the charger),
batteries and dropouts. Writes ``diurnal.png`` and ``diurnal.csv`` into
the output folder and prints the table.

    python scenarios/studies/diurnal.py [OUT_DIR] [--rounds N] [--seed S]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import hierfl
from hierfl.results import Result, atomic_write
from hierfl.sim.availability import Cursor, build
from hierfl.study import save_study_figure, study_cli, study_figure, study_scenario
from hierfl.topology import build_topology

NAME = "diurnal"
SCENARIO = Path(__file__).resolve().parents[1] / f"{NAME}.toml"
VARIANTS = [  # (require_plugged, label)
    (True, "require_plugged: only phones on a charger"),
    (False, "any online phone"),
]
COLOURS = ["#0072B2", "#D55E00"]  # Okabe-Ito
HOUR_S = 3600.0


def main(
    out_dir: str | Path = f"runs/studies/{NAME}", rounds: int | None = None, seed: int | None = None
) -> pd.DataFrame:
    """Run both variants, write the figure and the CSV table; return the table.

    ``rounds`` overrides ``run.cloud_rounds`` (the scenario's 48 h limit still holds) and
    ``seed`` the scenario's seed.
    """
    out, base = study_scenario(SCENARIO, out_dir, rounds, seed)
    results = [
        hierfl.run(base.with_overrides([f"selection.require_plugged={str(plugged).lower()}"]))
        for plugged, _ in VARIANTS
    ]
    table = pd.DataFrame(
        [_row(plugged, result, battery_work_j(base, result))
         for (plugged, _), result in zip(VARIANTS, results, strict=True)]
    )
    atomic_write(out / f"{NAME}.csv", lambda p: table.to_csv(p, index=False))
    _plot(results, base.run.target_accuracy, out / f"{NAME}.png")
    return table


def battery_work_j(scenario: hierfl.Scenario, result: Result) -> float:
    """Joules of downloads, computes and uploads done off the charger (from the battery):
    each work event whose device was not plugged in as it began, by the scenario's own
    availability spans."""
    topo = build_topology(scenario)
    cursor = Cursor(build(scenario, topo.profile_of, topo.profile_names, topo.names),
                    len(topo.names))
    events = result.events
    work = events[events["kind"].astype(str).isin(("download", "compute", "upload"))]
    work = work.sort_values("t_start", kind="stable")
    device = topo.names.get_indexer(work["node"].astype(str))
    total_j = 0.0
    for d, start_s, energy_j in zip(device, work["t_start"], work["energy_j"], strict=True):
        if not cursor.at(np.array([d]), start_s).plugged[0]:
            total_j += energy_j
    return total_j


def _row(plugged: bool, result: Result, from_battery_j: float) -> dict:
    """One variant's figures: participation, accuracy, energy, charging and batteries."""
    rounds, devices, summary = result.rounds, result.devices, result.summary
    events = result.events
    kinds = events["kind"].astype(str)
    battery = rounds["mean_battery"].astype(float)
    reached = summary.get("time_to_target_s")
    return {
        "require_plugged": plugged,
        "cloud_rounds": len(rounds),
        "rounds_with_updates": int((rounds["devices_trained"] > 0).sum()),
        "updates_aggregated": int(rounds["devices_trained"].sum()),
        "rounds_lost_offline": lost_offline(events),
        "final_accuracy": float(rounds["accuracy"].iloc[-1]),
        "time_to_target_h": None if reached is None else reached / HOUR_S,
        "device_energy_kj": float(devices["energy_j"].sum()) / 1e3,
        "training_energy_j": float(
            devices[["energy_compute_j", "energy_tx_j", "energy_rx_j"]].to_numpy().sum()),
        "training_from_battery_j": from_battery_j,
        "charged_kj": float(devices["charged_j"].sum()) / 1e3,
        "charge_events": int((kinds == "charge").sum()),
        "min_mean_battery": float(battery.min()),
        "final_mean_battery": float(battery.iloc[-1]),
        "devices_dropped": int(devices["dropped"].sum()),
        "dropouts": int((kinds == "dropout").sum()),
        "mean_online_h": float(devices["online_s"].mean()) / HOUR_S,
    }


def lost_offline(events: pd.DataFrame) -> int:
    """Device rounds cut by going offline: a download whose device delivered no upload and
    did not run out of battery in that edge round."""
    kinds = events["kind"].astype(str)
    key = ["node", "cloud_round", "edge_round"]
    began = events.loc[kinds == "download", key].drop_duplicates()
    delivered = events.loc[(kinds == "upload") & (events["bytes"] > 0), key].drop_duplicates()
    died = events.loc[kinds == "dropout", key].drop_duplicates()
    lost = began.merge(delivered, on=key, how="left", indicator=True)
    lost = lost[lost["_merge"] == "left_only"].drop(columns="_merge")
    return len(lost) - len(lost.merge(died, on=key))


def charging_by_hour(result: Result, hours: int) -> np.ndarray:
    """Joules stored by charging in each hour of the run (charge events split by hour)."""
    events = result.events
    charges = events[events["kind"].astype(str) == "charge"]
    stored = np.zeros(hours)
    for start_s, end_s, energy_j in zip(charges["t_start"], charges["t_end"],
                                        -charges["energy_j"], strict=True):
        edges = np.arange(hours + 1) * HOUR_S
        overlap = np.clip(np.minimum(edges[1:], end_s) - np.maximum(edges[:-1], start_s), 0, None)
        span = end_s - start_s
        stored += energy_j * overlap / span if span > 0 else 0.0
    return stored


def _plot(results: list[Result], target: float | None, path: Path) -> None:
    """Accuracy, updates per round, mean battery and charging, each against hours."""
    fig = study_figure(15, 4.8)
    accuracy_ax, trained_ax, battery_ax = fig.subplots(1, 3, sharex=True)
    end_h = max(float(r.summary["sim_time_s"]) for r in results) / HOUR_S
    hours = int(np.ceil(end_h))
    for colour, result, (_, label) in zip(COLOURS, results, VARIANTS, strict=True):
        rows = result.evaluations.sort_values("sim_time_s", kind="stable")
        accuracy_ax.step(rows["sim_time_s"] / HOUR_S, 100 * rows["accuracy"], where="post",
                         color=colour, lw=1.5, label=label)
        rounds = result.rounds
        trained_ax.plot(rounds["sim_time_s"] / HOUR_S, rounds["devices_trained"], color=colour,
                        lw=1.2, marker="o", ms=2)
        battery_ax.plot(np.r_[0.0, rounds["sim_time_s"] / HOUR_S],
                        np.r_[100.0, 100 * rounds["mean_battery"]], color=colour, lw=1.5)
        battery_ax.bar(np.arange(hours) + 0.5, charging_by_hour(result, hours) / 1e3 / 10,
                       width=0.9, color=colour, alpha=0.3)
    if target is not None:
        accuracy_ax.axhline(100 * target, color="#999999", ls="--", lw=1,
                            label=f"target accuracy ({100 * target:.0f}%)")
    accuracy_ax.set(ylabel="test accuracy (%)", ylim=(0, 100),
                    title="accuracy of the global model (evaluated every hour)")
    trained_ax.set(ylabel="updates aggregated in the round", title="participation per round")
    battery_ax.set(ylabel="mean battery (%); bars: kJ charged per hour / 10", ylim=(0, 105),
                   title="batteries (line) and charging (bars)")
    for ax in (accuracy_ax, trained_ax, battery_ax):
        ax.set_xlabel("simulated time (h; 0 = local midnight)")
        ax.set_xlim(0, end_h)
        ax.set_xticks(np.arange(0, end_h + 1, 6))
        ax.grid(color="#DDDDDD", lw=0.5)
        for night in (0, 24):
            ax.axvspan(night, night + 6, color="#EEEEEE", zorder=0)
    handles, labels = accuracy_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=9,
               frameon=False)
    n = len(results[0].devices)
    fig.suptitle(f"A diurnal fleet of {n} phones over 48 h (shaded: 0-6 h, when most are "
                 "online and on a charger)", fontsize=11)
    save_study_figure(fig, path)


def cli(argv: list[str] | None = None) -> None:
    """Parse OUT_DIR, --rounds and --seed, run the study, print its table."""
    study_cli(NAME, __doc__, main, "cloud rounds per variant (default: as many as fit in 48 h)",
              argv)


if __name__ == "__main__":
    cli()
