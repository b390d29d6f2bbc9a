"""Command line: parses arguments and calls library functions; errors are one line, exit 2."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hierfl.errors import HierflError
from hierfl.profiles import BUILTIN_PROFILES
from hierfl.results import Result
from hierfl.scenario import Scenario, load_scenario
from hierfl.sim.runner import simulate

app = typer.Typer(
    help="hierfl: simulate hierarchical federated learning on edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out_console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _main(debug: Annotated[bool, typer.Option(help="Show tracebacks of errors.")] = False) -> None:
    _state["debug"] = debug


def _resolve(scenario: Path, sets: list[str], seed: int | None, rounds: int | None) -> Scenario:
    """The scenario file with --set, --seed and --rounds applied and validated."""
    overrides = list(sets)
    if seed is not None:
        overrides.append(f"seed={seed}")
    if rounds is not None:
        overrides.append(f"run.cloud_rounds={rounds}")
    return load_scenario(scenario, overrides)


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="Scenario TOML file.")],
    out: Annotated[Path | None, typer.Option(help="Run folder [default: runs/NAME].")] = None,
    set_: Annotated[
        list[str], typer.Option("--set", help="Override KEY.PATH=VALUE (repeat).")
    ] = [],  # noqa: B006
    seed: Annotated[int | None, typer.Option(help="Override the scenario seed.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Override run.cloud_rounds.")] = None,
    quiet: Annotated[bool, typer.Option(help="Plain lines, no progress bar.")] = False,
    force: Annotated[bool, typer.Option(help="Write into a non-empty --out folder.")] = False,
) -> None:
    """Simulate SCENARIO and write its run folder (events, rounds, devices, summary)."""
    resolved = _resolve(scenario, set_, seed, rounds)
    folder = out or Path("runs") / resolved.name
    if folder.exists() and any(folder.iterdir()) and not force:
        raise HierflError(f"--out {folder}: folder is not empty (use --force to write into it)")
    result = _simulate_with_progress(resolved, quiet)
    result.write(folder)
    _print_summary(result, folder)


def _simulate_with_progress(scenario: Scenario, quiet: bool) -> Result:
    total = scenario.run.cloud_rounds
    if quiet or not out_console.is_terminal:

        def report(row: dict) -> None:
            if not quiet:
                out_console.print(_round_line(row, total), highlight=False)

        return simulate(scenario, on_round=report)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out_console, transient=True) as progress:
        task = progress.add_task(scenario.name, total=total, status="")

        def advance(row: dict) -> None:
            progress.update(task, advance=1, status=_round_line(row, total))

        return simulate(scenario, on_round=advance)


def _round_line(row: dict, total: int) -> str:
    accuracy = row["accuracy"]
    shown = "-" if accuracy != accuracy else f"{accuracy:.3f}"
    return (
        f"round {row['cloud_round'] + 1}/{total}  sim {row['sim_time_s']:.1f} s  "
        f"accuracy {shown}  energy {row['energy_used_j']:.1f} J"
    )


def _print_summary(result: Result, folder: Path) -> None:
    summary = result.summary
    table = Table(title=f"{summary['name']} (seed {summary['seed']})", show_header=False)
    accuracy = summary["final_accuracy"]
    rows = [
        ("final accuracy", "-" if accuracy != accuracy else f"{accuracy:.3f}"),
        ("simulated time", f"{summary['sim_time_s']:.2f} s"),
        ("device energy", f"{summary['energy_j']:.1f} J"),
        ("bytes uploaded", f"{summary['bytes_up']:,}"),
        ("devices dropped", str(summary["devices_dropped"])),
    ]
    if summary.get("target_accuracy") is not None:
        reached = summary["time_to_target_s"]
        rows.append(
            (
                f"time to {summary['target_accuracy']:.0%}",
                "not reached"
                if reached is None
                else f"{reached:.2f} s, {summary['energy_to_target_j']:.1f} J",
            )
        )
    for name, value in rows:
        table.add_row(name, value)
    out_console.print(table)
    out_console.print(f"run folder: {folder}")


@app.command()
def validate(
    scenarios: Annotated[list[Path], typer.Argument(help="Scenario TOML files.")],
    set_: Annotated[
        list[str], typer.Option("--set", help="Override KEY.PATH=VALUE (repeat).")
    ] = [],  # noqa: B006
) -> None:
    """Check scenario files; print each resolved scenario (defaults filled in) or its errors."""
    failed = False
    for path in scenarios:
        try:
            scenario = load_scenario(path, set_)
        except HierflError as error:
            failed = True
            for message in getattr(error, "messages", [str(error)]):
                err_console.print(f"error: {message}", highlight=False, soft_wrap=True)
            continue
        out_console.print(f"# {path}: valid", highlight=False)
        out_console.print_json(json.dumps(scenario.to_dict()))
    if failed:
        raise typer.Exit(2)


@app.command()
def profiles() -> None:
    """List the built-in device profiles with their sources."""
    table = Table(title="built-in profiles")
    for column in ("name", "memory_kb", "MFLOP/s", "kbps", "battery_mah", "W compute/tx/rx/idle"):
        table.add_column(column)
    for name, p in BUILTIN_PROFILES.items():
        battery = "mains" if p.battery_mah is None else f"{p.battery_mah:g} @ {p.voltage_v:g} V"
        table.add_row(
            name,
            f"{p.memory_kb:g}",
            f"{p.compute_mflops:g}",
            f"{p.bandwidth_kbps:g}",
            battery,
            f"{p.power_compute_w:g}/{p.power_tx_w:g}/{p.power_rx_w:g}/{p.power_idle_w:g}",
        )
    out_console.print(table)
    for name, p in BUILTIN_PROFILES.items():
        out_console.print(f"[bold]{name}[/bold]: {p.source}", soft_wrap=True)


def main() -> None:
    """Console entry point: one line and exit 2 for bad input, no traceback unless --debug."""
    try:
        code = app(standalone_mode=False)
    except HierflError as error:
        if _state["debug"]:
            traceback.print_exc()
        err_console.print(f"error: {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as error:  # click usage errors carry their own exit code
        usage_code = getattr(error, "exit_code", None)
        if usage_code is None:
            raise
        if hasattr(error, "show"):
            error.show()
        sys.exit(usage_code)
    sys.exit(code if isinstance(code, int) else 0)
