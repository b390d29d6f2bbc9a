"""Timing-only simulation throughput: the tutorial fleet scaled up, one cloud round.

Workload: the tutorial066 fleet (mcu / soc / mobile in equal thirds, cycling), the compact
MLP, int8 + 30% pruning, battery selection of half the devices (min_battery 0.1), 2 local
epochs, ``[run] learning = false``, one cloud round, hierarchical with devices / 1000 edges
(1,000 devices per edge, round robin), the default backhaul.

Each size runs in a fresh child process (so peak RSS is that size's own), which first runs
a 300-device warm-up (imports and torch's lazy initialisation are not counted), then:

- wall: ``hierfl.run(scenario)`` end to end (prepare, simulate, events/rounds/devices
  tables, summary); cpu: the process CPU seconds of the same call (steadier than wall on a
  shared machine); each the best of ``--repeat`` runs (3), as are raw SimPy's rate and the
  simulation alone, so that other processes on a shared machine weigh on neither side;
- events/s: recorded events (rows of the events table) per wall second;
- raw SimPy: the same number of trivial ``env.timeout(1)`` events in one plain SimPy
  process, timed in the same child; the ratio is hierfl's events/s over raw SimPy's;
- peak RSS: ``ru_maxrss`` of the child after the first run (the warm-up included), and
  its growth over the RSS before that run;
- trace B/event: bytes the Trace holds at the close of the last cloud round (measured with
  tracemalloc, filtered to allocations made from ``hierfl/trace.py``) per recorded event;
  table B/event: the events table's columns per event (categorical codes; the node names
  they point to are per node, not per event);
- tracemalloc peak: the Python heap's peak during a second, traced run (slower; skip it
  with ``--no-tracemalloc``).

With ``--cells N`` the network is shared: N edges (devices / N per edge), each with a
54 Mbit/s Wi-Fi cell (2 ms) and its own backhaul (100, 200, ... Mbit/s, 20 ms), and a
1 Gbit/s core (5 ms): every transfer is a flow at its max-min fair share.

With ``--trigger deadline`` each edge aggregates ``DEADLINE_S`` after its round starts (the
slowest devices are cut and recorded as late); with ``--trigger first_k`` each edge selects
``ceil(1.3 k)`` devices, k = 40% of its devices, and aggregates the first k arrivals; with
``--trigger buffered`` each edge keeps half its devices at work and aggregates every
quarter of its devices' arrivals (FedBuff).

With ``--availability markov`` devices come and go: exponential online and offline spans of
mean 1 h each (half the fleet online at any time), so selection reads every device's state
and a device that goes offline mid-round stops there.

Run: ``python benchmarks/bench_sim.py [--sizes 10000 100000 1000000] [--repeat 3]
[--cells 10] [--trigger all|deadline|first_k|buffered] [--availability markov] [--no-tracemalloc]
[--profile]`` (``--profile`` prints a pyinstrument profile of the largest size's runs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import pandas as pd
import simpy

import hierfl
from hierfl.scenario import Scenario
from hierfl.sim.cloud import cloud
from hierfl.sim.engine import prepare

SIZES = (10_000, 100_000, 1_000_000)
DEVICES_PER_EDGE = 1000
TRIGGERS = ("all", "deadline", "first_k", "buffered")
DEADLINE_S = 1.0  # cuts the mcu boards (about 1.9 s a round), keeps soc and mobile (0.09 s)
AVAILABILITY = {
    "always": {"model": "always"},
    "markov": {"model": "markov", "mean_online_s": 3600.0, "mean_offline_s": 3600.0},
}


def scenario(
    devices: int, cells: int = 0, trigger: str = "all", availability: str = "always"
) -> Scenario:
    """The tutorial fleet scaled to ``devices`` (a multiple of 3 is split evenly); with
    ``cells``, that many edges, each with a shared cell and its own backhaul, and a core;
    edges aggregate on ``trigger``; ``availability`` markov: spans of mean 1 h online and
    1 h offline."""
    third, extra = divmod(devices, 3)
    counts = [third + (k < extra) for k in range(3)]
    topology = {"mode": "hierarchical", "edges": max(1, devices // DEVICES_PER_EDGE),
                "assign": "round_robin"}
    if cells:
        topology.update(
            edges=cells,
            cell={"bandwidth_kbps": 54_000, "latency_ms": 2},
            backhaul=[{"bandwidth_kbps": 100_000 * (1 + e), "latency_ms": 20}
                      for e in range(cells)],
            core={"bandwidth_kbps": 1_000_000, "latency_ms": 5},
        )
    raw = {
        "name": f"bench-{devices}",
        "seed": 42,
        "run": {"cloud_rounds": 1, "edge_rounds": 1, "local_epochs": 2, "batch_size": 8,
                "learning": False},
        "data": {"samples_per_device": [20, 80]},
        "model": {"name": "compact"},
        "compression": {"quantize": "int8", "prune_ratio": 0.3, "payload": "delta"},
        "selection": {"policy": "battery", "fraction": 0.5, "min_battery": 0.1},
        "topology": topology,
        "aggregation": aggregation(trigger, devices // topology["edges"]),
        "availability": AVAILABILITY[availability],
        "devices": [{"profile": p, "count": c} for p, c in zip(("mcu", "soc", "mobile"), counts,
                                                                strict=True)],
    }
    return hierfl.parse_scenario(raw)


def aggregation(trigger: str, per_edge: int) -> dict:
    """The ``[aggregation]`` table of ``trigger`` for edges of ``per_edge`` devices."""
    if trigger == "deadline":
        return {"trigger": "deadline", "deadline_s": DEADLINE_S}
    if trigger == "first_k":
        return {"trigger": "first_k", "k": max(1, per_edge * 4 // 10)}
    if trigger == "buffered":
        concurrency = max(1, per_edge // 2)
        return {"trigger": "buffered", "concurrency": concurrency,
                "buffer": max(1, concurrency // 2)}
    return {}


def raw_simpy_per_s(events: int) -> float:
    """Trivial timeouts per second in one plain SimPy process."""
    env = simpy.Environment()

    def ticker(env: simpy.Environment):
        for _ in range(events):
            yield env.timeout(1)

    env.process(ticker(env))
    start = time.perf_counter()
    env.run()
    return events / (time.perf_counter() - start)


def rss_bytes() -> int:
    """Current resident set size (Linux /proc), bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def simulation_wall_s(chosen: Scenario) -> float:
    """Seconds to prepare and play the simulation alone (no events/devices tables)."""
    start = time.perf_counter()
    sim = prepare(chosen)
    sim.env.process(cloud(sim))
    sim.env.run()
    return time.perf_counter() - start


def table_bytes(events) -> int:
    """Bytes of the events table's columns (a categorical counts its codes; its categories,
    the node names, are per node, not per event)."""
    return sum(
        column.cat.codes.nbytes if isinstance(column.dtype, pd.CategoricalDtype) else column.nbytes
        for _, column in events.items()
    )


def traced_run(devices: int, cells: int, trigger: str, availability: str) -> tuple[int, int]:
    """(Python heap peak, bytes held by the Trace at the last round's close), tracemalloc."""
    held = []

    def measure(row: dict) -> None:
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*hierfl/trace.py", all_frames=True)])
        held.append(sum(trace.size for trace in snapshot.traces))

    tracemalloc.start(8)  # frames enough to see trace.py above numpy's own
    hierfl.run(scenario(devices, cells, trigger, availability), on_round=measure)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, held[-1]


def measure_one(
    devices: int, traced: bool, profile: bool, repeat: int, cells: int, trigger: str,
    availability: str,
) -> dict:
    """All figures of one size, in this process; times are the best of ``repeat`` runs."""
    hierfl.run(scenario(300, min(cells, 3), trigger, availability))
    chosen = scenario(devices, cells, trigger, availability)
    before = rss_bytes()
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        profiler.start()
    wall = cpu = float("inf")
    for k in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = hierfl.run(chosen)
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
        if k == 0:  # the first run's peak: later ones reuse (or fragment) its memory
            peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        events, table = len(result.events), table_bytes(result.events)
        sim_time_s = result.summary["sim_time_s"]
        del result
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False), file=sys.stderr)
    figures = {
        "devices": devices,
        "edges": chosen.topology.edges,
        "wall_s": wall,
        "cpu_s": cpu,
        "events": events,
        "events_per_s": events / wall,
        "raw_simpy_per_s": max(raw_simpy_per_s(events) for _ in range(repeat)),
        "peak_rss": peak_rss,
        "rss_growth": peak_rss - before,
        "table_bytes_per_event": table / events,
        "sim_time_s": sim_time_s,
        "sim_wall_s": min(simulation_wall_s(chosen) for _ in range(repeat)),
    }
    if traced:
        heap_peak, trace_bytes = traced_run(devices, cells, trigger, availability)
        figures["tracemalloc_peak"] = heap_peak
        figures["trace_bytes_per_event"] = trace_bytes / events
    return figures


def row(f: dict) -> str:
    gib = 1024**3
    ratio = f["events_per_s"] / f["raw_simpy_per_s"]
    sim_ratio = f["events"] / f["sim_wall_s"] / f["raw_simpy_per_s"]
    traced = (f"{f['trace_bytes_per_event']:>8.1f} {f['tracemalloc_peak'] / gib:>8.2f}"
              if "tracemalloc_peak" in f else f"{'-':>8} {'-':>8}")
    return (f"{f['devices']:>9,} {f['edges']:>6,} {f['wall_s']:>8.2f} {f['cpu_s']:>7.2f} "
            f"{f['events']:>10,} "
            f"{f['events_per_s']:>10,.0f} {f['raw_simpy_per_s']:>10,.0f} {ratio:>6.2f} "
            f"{f['sim_wall_s']:>7.2f} {sim_ratio:>6.2f} "
            f"{f['peak_rss'] / gib:>7.2f} {f['rss_growth'] / gib:>7.2f} "
            f"{f['table_bytes_per_event']:>8.1f} {traced}")


HEADER = (f"{'devices':>9} {'edges':>6} {'wall_s':>8} {'cpu_s':>7} {'events':>10} "
          f"{'events/s':>10} {'simpy/s':>10} {'ratio':>6} {'sim_s':>7} {'sratio':>6} "
          f"{'rss_GiB':>7} {'grow_GiB':>7} "
          f"{'tbl_B/ev':>8} {'trc_B/ev':>8} {'heap_GiB':>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--no-tracemalloc", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (best is shown)")
    parser.add_argument("--cells", type=int, default=0, help="edges with a shared cell each")
    parser.add_argument("--trigger", choices=TRIGGERS, default="all",
                        help="when edges aggregate (aggregation.trigger)")
    parser.add_argument("--availability", choices=sorted(AVAILABILITY), default="always",
                        help="always, or markov: devices go on and off line (mean 1 h each)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(
            measure_one(args.one, not args.no_tracemalloc, args.profile, args.repeat,
                        args.cells, args.trigger, args.availability)))
        return
    print(f"trigger {args.trigger}; load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} cores; "
          f"events/s and ratio use wall time; "
          f"peak RSS = ru_maxrss of a child process per size; "
          f"availability {args.availability}")
    print(HEADER)
    for i, devices in enumerate(args.sizes):
        command = [sys.executable, __file__, "--one", str(devices), "--repeat", str(args.repeat),
                   "--cells", str(args.cells), "--trigger", args.trigger,
                   "--availability", args.availability]
        if args.no_tracemalloc:
            command.append("--no-tracemalloc")
        if args.profile and i == len(args.sizes) - 1:
            command.append("--profile")
        out = subprocess.run(command, check=True, capture_output=True, text=True)
        if args.profile and out.stderr:
            print(out.stderr, file=sys.stderr)
        print(row(json.loads(out.stdout.strip().splitlines()[-1])), flush=True)


if __name__ == "__main__":
    main()
