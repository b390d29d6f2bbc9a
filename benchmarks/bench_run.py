"""Whole `hierfl run` of the W scenarios: wall time from the CLI, and where it goes.

    python benchmarks/bench_run.py [--repeat 3]

For each of benchmarks/w100.toml and benchmarks/w1000.toml it prints the wall time of
the CLI command (a fresh process, imports included, no plots), then an in-process
breakdown (the fastest of as many runs): import, prepare (model, FLOPs, data, topology),
training (trainer flushes), compression (encode + decode), evaluation, simulation (the rest
of the SimPy run) and writing the run folder. The parts are measured by wrapping hierfl's
own functions with timers in this process, so they add up to the in-process total.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).parent
SCENARIOS = [HERE / "w100.toml", HERE / "w1000.toml"]
SPENT: dict[str, float] = defaultdict(float)
ACTIVE: set[str] = set()  # parts being timed now


def cli_wall_s(scenario: Path, repeat: int) -> float:
    """Best wall time of `hierfl run SCENARIO --no-plots` in a fresh interpreter."""
    best = float("inf")
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "hierfl",
                    "run",
                    str(scenario),
                    "--out",
                    out,
                    "--force",
                    "--quiet",
                    "--no-plots",
                ],
                check=True,
                capture_output=True,
            )
            best = min(best, time.perf_counter() - start)
    return best


def timed(part: str, function: Callable) -> Callable:
    """``function``, adding its wall time to SPENT[part] (outermost call of the part only)."""

    def wrapper(*args, **kwargs):
        if part in ACTIVE:
            return function(*args, **kwargs)
        ACTIVE.add(part)
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SPENT[part] += time.perf_counter() - start
            ACTIVE.discard(part)

    return wrapper


def instrument() -> None:
    """Wrap the functions whose time is reported (imports them: counted as import time)."""
    from hierfl.compression import Codec
    from hierfl.learn import batched, trainer
    from hierfl.sim import cloud, engine, runner

    for method in ("encode", "decode", "encode_rows", "decode_rows"):
        setattr(Codec, method, timed("compression", getattr(Codec, method)))
    batched.BatchedTrainer.flush = timed("training", batched.BatchedTrainer.flush)
    trainer.ReferenceTrainer.flush = timed("training", trainer.ReferenceTrainer.flush)
    cloud.evaluate = timed("evaluation", cloud.evaluate)
    runner.per_sample = timed("evaluation", runner.per_sample)
    runner.prepare = timed("prepare", engine.prepare)


def breakdown(scenario_path: Path, repeat: int) -> dict[str, float]:
    """Seconds per part of the fastest of ``repeat`` in-process runs of ``scenario_path``."""
    import hierfl

    best: dict[str, float] = {}
    for _ in range(repeat):
        SPENT.clear()
        scenario = hierfl.load_scenario(scenario_path)
        start = time.perf_counter()
        result = hierfl.run(scenario)
        run_s = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result.write(out)
            SPENT["writing"] = time.perf_counter() - start
        measured = sum(SPENT[p] for p in ("prepare", "training", "compression", "evaluation"))
        SPENT["simulation"] = run_s - measured
        if not best or sum(SPENT.values()) < sum(best.values()):
            best = dict(SPENT)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="CLI runs per scenario (best)")
    args = parser.parse_args()
    start = time.perf_counter()
    instrument()
    import_s = time.perf_counter() - start
    print(f"import hierfl (in process): {import_s:.2f} s")
    for scenario in SCENARIOS:
        wall = cli_wall_s(scenario, args.repeat)
        parts = breakdown(scenario, args.repeat)
        total = sum(parts.values())
        print(f"\n{scenario.name}: CLI wall {wall:.2f} s (best of {args.repeat}, imports included)")
        for part in ("prepare", "training", "compression", "evaluation", "simulation", "writing"):
            print(f"  {part:12} {parts[part]:6.3f} s  {100 * parts[part] / total:5.1f}%")
        print(f"  {'in-process':12} {total:6.3f} s")


if __name__ == "__main__":
    main()
