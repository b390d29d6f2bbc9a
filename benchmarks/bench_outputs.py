"""What a run's default outputs cost next to the simulation: trace.json and the figures.

    python benchmarks/bench_outputs.py [--repeat 3] [--scenario benchmarks/t100k.toml] [--cli]

In one process, best of --repeat each, it times: the simulation (``hierfl.run``), the tables
(``Result.write``: parquet, CSV, summary), trace.json (``write_chrome_trace``) and the
figures (``plot_run``), in wall and CPU seconds (CPU is the steadier on a shared machine).
It then prints what `hierfl run`'s defaults add to the tables-only run (``--no-trace
--no-plots``): the figures, and trace.json when the run is at most the default size
(``TRACE_DEFAULT_EVENTS``; a hierfl without that limit wrote it always). Target (issue 12):
at most 50%. With --cli it also times the three commands end to end in fresh processes.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).parent
MODES = {"tables only": ["--no-trace", "--no-plots"], "defaults": [], "--trace": ["--trace"]}


def best(repeat: int, work: Callable[[], object]) -> tuple[float, float, object]:
    """Best wall and CPU seconds of ``work()`` over ``repeat`` calls, and its last value."""
    wall = cpu = float("inf")
    value = None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        value = work()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, value


def in_process(scenario_path: Path, repeat: int) -> None:
    import hierfl
    from hierfl import chrome_trace
    from hierfl.plots import plot_run

    scenario = hierfl.load_scenario(scenario_path)
    hierfl.run(scenario)  # warm-up: imports, FLOP count
    parts = {}
    parts["simulation"] = best(repeat, lambda: hierfl.run(scenario))
    result = parts["simulation"][2]
    with tempfile.TemporaryDirectory() as out:
        parts["tables"] = best(repeat, lambda: result.write(out))
        parts["trace.json"] = best(
            repeat, lambda: chrome_trace.write_chrome_trace(result, Path(out) / "trace.json"))
        parts["figures"] = best(repeat, lambda: plot_run(result, out))
    events = len(result.events)
    print(f"{scenario.name}: {events:,} events")
    for name, (wall, cpu, _) in parts.items():
        print(f"  {name:11} wall {wall:6.2f} s  CPU {cpu:6.2f} s")
    limit = getattr(chrome_trace, "TRACE_DEFAULT_EVENTS", None)
    traced = limit is None or events <= limit
    extra = ["figures", *(["trace.json"] if traced else [])]
    for k, unit in ((0, "wall"), (1, "CPU")):
        base = parts["simulation"][k] + parts["tables"][k]
        added = sum(parts[name][k] for name in extra)
        print(f"  defaults ({' + '.join(extra)}) add {100 * added / base:.0f}% ({unit}) to "
              "simulation + tables")


def cli(scenario: Path, repeat: int) -> None:
    """Each mode as `hierfl run` in a fresh process: best wall and CPU (user + system) seconds,
    and what it adds to the tables-only command (the issue's own measure)."""
    times = {}
    for label, flags in MODES.items():
        def command(flags: list[str] = flags) -> None:
            with tempfile.TemporaryDirectory() as out:
                subprocess.run([sys.executable, "-m", "hierfl", "run", str(scenario), "--out",
                                out, "--force", "--quiet", *flags],
                               check=True, capture_output=True)
        times[label] = best_child(repeat, command)
        wall, cpu = times[label]
        print(f"  CLI {label:12} wall {wall:6.2f} s  CPU {cpu:6.2f} s")
    for label in ("defaults", "--trace"):
        added = [100 * (times[label][k] / times["tables only"][k] - 1) for k in (0, 1)]
        print(f"  CLI {label} add {added[0]:.0f}% (wall), {added[1]:.0f}% (CPU) to tables only")


def best_child(repeat: int, work: Callable[[], object]) -> tuple[float, float]:
    """Best wall and child-process CPU seconds of ``work()`` over ``repeat`` calls."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        work()
        wall = min(wall, time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = min(cpu, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scenario", type=Path, default=HERE / "t100k.toml")
    parser.add_argument("--cli", action="store_true", help="also time the CLI end to end")
    args = parser.parse_args()
    in_process(args.scenario, args.repeat)
    if args.cli:
        cli(args.scenario, args.repeat)


if __name__ == "__main__":
    main()
