"""Command line: parses arguments and calls library functions; errors are one line, exit 2."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hierfl.checkpoint import checkpoint_scenario, load_checkpoint
from hierfl.chrome_trace import (
    BYTES_PER_RECORD,
    TRACE_DEFAULT_EVENTS,
    estimated_bytes,
    write_chrome_trace,
)
from hierfl.errors import HierflError
from hierfl.export import CALIBRATION_SAMPLES, export_run
from hierfl.plugins import check_references
from hierfl.profiles import BUILTIN_PROFILES, Profile
from hierfl.results import Result, compare_table, read_result
from hierfl.rundir import claim, finish, load_options, load_overrides, save_options
from hierfl.scenario import Scenario, load_scenario
from hierfl.sim.runner import resume as resume_run
from hierfl.sim.runner import simulate
from hierfl.sweep import plan_sweep, run_sweep

app = typer.Typer(
    help="hierfl: simulate hierarchical federated learning on edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Text is never read as rich markup unless a print asks for it: names, paths and messages
# are the user's, and "[/bold]" or "[low, high]" must print as typed.
out_console = Console(markup=False)
err_console = Console(stderr=True, markup=False)
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
    scenario: Annotated[Path | None, typer.Argument(help="Scenario TOML file.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default: runs/NAME).")] = None,
    set_: Annotated[
        list[str], typer.Option("--set", help="Override KEY.PATH=VALUE (repeat).")
    ] = [],  # noqa: B006
    seed: Annotated[int | None, typer.Option(help="Override the scenario seed.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Override run.cloud_rounds.")] = None,
    quiet: Annotated[bool, typer.Option(help="Plain lines, no progress bar.")] = False,
    force: Annotated[
        bool, typer.Option(help="Write into a non-empty --out folder, removing an old run's files.")
    ] = False,
    plots: Annotated[
        bool | None,
        typer.Option(
            "--plots/--no-plots",
            help="Draw timeline, accuracy and energy PNGs (default: yes; --resume: as the run "
            "it resumes).",
            show_default=False,
        ),
    ] = None,
    trace: Annotated[
        bool | None,
        typer.Option(
            "--trace/--no-trace",
            help=f"Write trace.json (default: when the run has at most {TRACE_DEFAULT_EVENTS:,} "
            f"events, about {BYTES_PER_RECORD} bytes each; --resume: as the run it resumes).",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run in this folder from its last checkpoint.")
    ] = None,
    allow_code: Annotated[
        bool,
        typer.Option(
            help="With --resume: run the code (package.module:Name) a checkpoint names even "
            "when your hierfl did not write it."
        ),
    ] = False,
) -> None:
    """Simulate SCENARIO and write its run folder (tables, summary, model, trace.json, plots).

    A checkpoint after every cloud round lets --resume DIR finish a killed run exactly.
    `hierfl plot DIR [--trace]` writes the figures (and trace.json) of a run written without.
    """
    asked = {"plots": plots, "trace": trace}
    if resume is not None:
        if scenario or set_ or seed is not None or rounds is not None or out or force:
            raise HierflError(
                "--resume DIR takes no SCENARIO, --out, --set, --seed, --rounds or --force"
            )
        result = _resume(resume, quiet, asked, allow_code)
        _print_summary(result, resume, quiet)
        return
    if scenario is None:
        raise HierflError("run: give a SCENARIO file, or --resume DIR")
    if allow_code:
        raise HierflError("--allow-code goes with --resume DIR (a scenario you run names its code)")
    resolved = _resolve(scenario, set_, seed, rounds)
    check_references(resolved)
    folder = out or Path("runs") / resolved.name
    options = {"plots": plots is not False, "trace": trace}  # trace None: by its size
    overrides = _overrides(set_, seed, rounds)
    with claim(folder, force=force):
        save_options(folder, options, overrides)
        result = _with_progress(
            resolved, quiet, lambda report: simulate(resolved, report, checkpoint_dir=folder)
        )
        result.summary["overrides"] = overrides
        _write_outputs(result, folder, options)
    _print_summary(result, folder, quiet)


def _overrides(sets: list[str], seed: int | None, rounds: int | None) -> list[str]:
    """The command line's changes to the scenario file, as ``key=value`` (for titles)."""
    extra = [] if seed is None else [f"seed={seed}"]
    extra += [] if rounds is None else [f"run.cloud_rounds={rounds}"]
    return [*sets, *extra]


def _resume(folder: Path, quiet: bool, asked: dict[str, bool | None], allow_code: bool) -> Result:
    """Finish the run in ``folder`` from its checkpoint; outputs as asked, else as at first."""
    if not folder.is_dir():
        raise HierflError(f"--resume {folder}: no such folder")
    with claim(folder, resume=True):
        state = load_checkpoint(folder, allow_code)
        resolved = checkpoint_scenario(state)
        check_references(resolved)
        options = load_options(folder, asked)
        result = _with_progress(
            resolved, quiet, lambda report: resume_run(folder, report, state=state)
        )
        result.summary["overrides"] = load_overrides(folder)
        _write_outputs(result, folder, options)
    return result


def _write_outputs(result: Result, folder: Path, options: dict[str, bool | None]) -> None:
    """Tables, summary and model, then trace.json and figures as asked; then no checkpoint."""
    result.write(folder)
    _write_trace(result, folder, options["trace"])
    if options["plots"]:
        _draw(result, folder)
    finish(folder)


def _write_trace(result: Result, folder: Path, wanted: bool | None) -> None:
    """Write trace.json when asked, or by default when it is small enough; say when not."""
    events = len(result.events)
    if wanted is None and events > TRACE_DEFAULT_EVENTS:
        err_console.print(
            f"note: trace.json not written: {events:,} events (about "
            f"{estimated_bytes(events) / 1e6:,.0f} MB) are more than the default "
            f"{TRACE_DEFAULT_EVENTS:,}; `hierfl plot {folder} --trace` writes it",
            highlight=False, soft_wrap=True,
        )
        return
    if wanted is not False:
        write_chrome_trace(result, folder / "trace.json")


def _draw(
    result: Result, folder: Path, window_s: tuple[float | None, float | None] = (None, None)
) -> list[Path]:
    from hierfl.plots import plot_run

    return plot_run(result, folder, window_s)


@app.command()
def plot(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    from_s: Annotated[
        float | None,
        typer.Option("--from", help="Timeline from this simulated second (default 0).", min=0),
    ] = None,
    to_s: Annotated[
        float | None,
        typer.Option("--to", help="Timeline up to this simulated second (default: the end, "
                     "or the end of the 5th cloud round in longer runs).", min=0),
    ] = None,
    trace: Annotated[bool, typer.Option("--trace", help="Also write trace.json.")] = False,
) -> None:
    """(Re)draw timeline.png, energy.png and accuracy.png (runs that learn) of a run folder."""
    result = read_result(run_dir)
    written = _draw(result, run_dir, (from_s, to_s))
    if trace:
        written.append(write_chrome_trace(result, run_dir / "trace.json"))
    names = ", ".join(path.name for path in written)
    out_console.print(f"written to {run_dir}: {names}", highlight=False, soft_wrap=True)


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders.")],
    out: Annotated[Path, typer.Option(help="Figure to write.")] = Path("compare.png"),
    target: Annotated[
        float | None, typer.Option(help="Target accuracy (default: each run's own).")
    ] = None,
) -> None:
    """Overlay accuracy vs simulated time and vs energy; tabulate time/energy to target."""
    from hierfl.plots import plot_compare
    from hierfl.study import selection_note

    results = [read_result(folder) for folder in run_dirs]
    labels = _labels(run_dirs)
    plot_compare(results, labels, out)
    frame = compare_table(results, labels, target)
    header = [COMPARE_HEADERS.get(column, column) for column in frame.columns]
    rows = [[_cell(value) for value in row] for row in frame.itertuples(index=False)]
    _print_table("comparison", header, rows)
    out_console.print(selection_note(results, labels), highlight=False, soft_wrap=True)
    out_console.print(f"figure: {out}", highlight=False, soft_wrap=True)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder that learned (has model.pt).")],
    format_: Annotated[str, typer.Option("--format", help="onnx")] = "onnx",
    int8: Annotated[
        bool, typer.Option("--int8", help="Quantize statically to int8 (onnxruntime).")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="File to write (default RUN_DIR/model[.wWIDTH][.int8].onnx)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing file and report.")] = False,
    calibration: Annotated[
        int, typer.Option(help="Training samples that calibrate --int8.")
    ] = CALIBRATION_SAMPLES,
    allow_code: Annotated[
        bool, typer.Option(help="Build a model the run names as package.module:Class.")
    ] = False,
    width: Annotated[
        float | None,
        typer.Option(help="Export this HeteroFL variant (one of [model] variants) instead."),
    ] = None,
) -> None:
    """Export the run's global model (or a tier's variant), check it against PyTorch on the
    test set, and set its size against each profile's memory; the report also goes to
    FILE.json."""
    report = export_run(run_dir, format_, int8, out, force, allow_code, calibration, width)
    rows = [
        ["file", f"{report.file} ({report.file_bytes:,} bytes)"],
        ["width", f"{report.width:g}"],
        ["test samples", f"{report.test_samples:,}"],
        ["agreement with PyTorch", f"{report.agreement:.2%}"],
        ["accuracy PyTorch", f"{report.accuracy_torch:.2%}"],
        [f"accuracy {report.format}{' int8' * report.int8}", f"{report.accuracy_export:.2%}"],
    ]
    rows += [
        [
            f"fits {name} ({_kib(p['memory_kb'])}{', in fleet' * p['in_fleet']})",
            "yes" if p["fits"] else "no",
        ]
        for name, p in report.profiles.items()
    ]
    _print_table("export", None, rows)
    out_console.print(f"report: {report.file}.json", highlight=False, soft_wrap=True)


COMPARE_HEADERS = {
    "final_accuracy": "final acc",
    "sim_time_s": "sim time s",
    "energy_j": "energy J",
    "bytes_up": "bytes up",
    "target_accuracy": "target",
    "time_to_target_s": "to target s",
    "energy_to_target_j": "to target J",
    "rounds_to_target": "to target rounds",
}


def _labels(folders: list[Path]) -> list[str]:
    """Folder names, or whole paths where two runs share a name."""
    names = [folder.name for folder in folders]
    return names if len(set(names)) == len(names) else [str(folder) for folder in folders]


def _print_table(title: str, header: list[str] | None, rows: list[list[str]]) -> None:
    """A table whose cells never wrap: rich boxes on a terminal, plain columns elsewhere.

    Piped or redirected output gets aligned text at its full width, so that no number is
    split over two lines whatever the reader's width.
    """
    lines = ([header] if header else []) + rows
    widths = [max(len(cell) for cell in column) for column in zip(*lines, strict=True)]
    if not out_console.is_terminal:
        out_console.out(title, highlight=False)
        for line in lines:
            cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
            out_console.out("  ".join(cells).rstrip(), highlight=False)
        return
    table = Table(title=title, show_header=header is not None)
    for k, width in enumerate(widths):
        name = header[k] if header else ""
        table.add_column(name, no_wrap=k > 0 or header is None, min_width=min(width, 24))
    for row in rows:
        table.add_row(*row)
    out_console.print(table)


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _with_progress(
    scenario: Scenario, quiet: bool, play: Callable[[Callable[[dict], None]], Result]
) -> Result:
    """Run ``play(report)``, reporting each cloud round as a bar or as plain lines."""
    total = scenario.run.cloud_rounds
    if quiet or not out_console.is_terminal:

        def report(row: dict) -> None:
            if not quiet:
                out_console.print(_round_line(row, total), highlight=False, soft_wrap=True)

        return play(report)
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
            done = row["cloud_round"] + 1
            progress.update(task, completed=done, status=_round_line(row, total))

        return play(advance)


def _round_line(row: dict, total: int) -> str:
    """A finished cloud round, numbered from 0 as in rounds.csv; energy is the run's so far."""
    accuracy = row["accuracy"]
    shown = "-" if accuracy != accuracy else f"{accuracy:.3f}"
    return (
        f"cloud_round {row['cloud_round']} ({row['cloud_round'] + 1}/{total} done)  "
        f"sim {row['sim_time_s']:.1f} s  accuracy {shown}  "
        f"device energy so far {row['energy_used_j']:,.1f} J"
    )


def _print_summary(result: Result, folder: Path, quiet: bool = False) -> None:
    """The run's figures as a table (only the folder's line with ``quiet``)."""
    if quiet:
        out_console.print(f"run folder: {folder}", highlight=False, soft_wrap=True)
        return
    summary = result.summary
    accuracy = summary["final_accuracy"]
    rows = [
        ("final accuracy", "-" if accuracy != accuracy else f"{accuracy:.3f}"),
        ("simulated time", f"{summary['sim_time_s']:.2f} s"),
        ("device energy", f"{summary['energy_j']:,.1f} J"),
        ("bytes uploaded", f"{summary['bytes_up']:,}"),
        ("devices dropped", str(summary["devices_dropped"])),
        ("devices skipped (model too big)", f"{_skipped(result):,}"),
    ]
    learning = (summary.get("scenario") or {}).get("run", {}).get("learning", True)
    if summary.get("target_accuracy") is not None and learning:
        reached = summary["time_to_target_s"]
        rows.append(
            (
                f"time to {summary['target_accuracy']:.0%}",
                "not reached"
                if reached is None
                else f"{reached:.2f} s, {summary['energy_to_target_j']:,.1f} J",
            )
        )
    _print_table(f"{summary['name']} (seed {summary['seed']})", None, [list(r) for r in rows])
    if summary.get("tiers"):
        _print_tiers(summary["tiers"])
    out_console.print(f"run folder: {folder}", highlight=False, soft_wrap=True)


def _print_tiers(tiers: list[dict]) -> None:
    """Each width variant's devices, size and accuracy (its own sub-model's)."""

    def score(value: float) -> str:
        return "-" if value != value else f"{value:.3f}"

    rows = [
        [
            f"{tier['width']:g}",
            ", ".join(f"{name} {n}" for name, n in tier["profiles"].items()) or "-",
            f"{tier['n_params']:,}",
            f"{tier['uplink_payload_bytes']:,}",
            score(tier["test_accuracy"]),
            score(tier["local_accuracy"]),
        ]
        for tier in tiers
    ]
    header = ["width", "devices", "params", "uplink bytes", "test acc", "own-data acc"]
    _print_table("tiers (each its own sub-model)", header, rows)


def _skipped(result: Result) -> int:
    """Devices the model did not fit (each has ``skip`` events and never trained)."""
    events = result.events
    return int(events.loc[events["kind"].astype(str) == "skip", "node"].nunique())


@app.command()
def sweep(
    scenario: Annotated[Path, typer.Argument(help="Scenario TOML file.")],
    grid: Annotated[
        list[str],
        typer.Option(help="KEY=V1,V2,... (repeat; the cartesian product is run; seed=... too)."),
    ] = [],  # noqa: B006
    seeds: Annotated[int, typer.Option(help="Seeds per grid point, from the scenario's.")] = 1,
    out: Annotated[
        Path | None, typer.Option(help="Sweep folder (default: runs/NAME-sweep).")
    ] = None,
    backend: Annotated[str, typer.Option(help="local (process pool) or ray.")] = "local",
    workers: Annotated[
        int | None, typer.Option(help="Local processes (default: one per core).")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address ('auto' joins a running one).")
    ] = None,
    num_cpus: Annotated[int, typer.Option(help="CPUs per run on Ray.")] = 1,
    max_runs: Annotated[int, typer.Option(help="Refuse larger sweeps unless --yes.")] = 1000,
    yes: Annotated[bool, typer.Option("--yes", help="Run a sweep over --max-runs.")] = False,
) -> None:
    """Run SCENARIO over a grid of overrides and seeds; finished runs in --out are skipped.

    Exit status 1 when any run failed (each is named on stderr, its error in error.txt).
    """
    plan = plan_sweep(
        scenario, grid, seeds, out or Path("runs") / f"{scenario.stem}-sweep", max_runs, yes
    )
    failed = 0
    with Progress(
        TextColumn("[bold]sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=out_console,
        disable=not out_console.is_terminal,
    ) as progress:
        task = progress.add_task("sweep", total=len(plan.points), status="")

        def done(row: dict) -> None:
            nonlocal failed
            failed += row["status"] != "ok"
            progress.update(task, advance=1, status=f"{failed} failed")
            if not out_console.is_terminal:
                out_console.print(f"{row['status']:6} {row['run']}", highlight=False)

        table = run_sweep(plan, backend, workers, address, num_cpus, done)
    from hierfl.plots import plot_sweep

    plot_sweep(table, plan.out)
    out_console.print(f"{len(table)} runs, {failed} failed: {plan.out / 'sweep.csv'}")
    stale = plan.stale_folders()
    if stale:
        out_console.print(
            f"{len(stale)} run folders in {plan.out} belong to no point of this sweep "
            "(an earlier scenario or grid); left as they are",
            highlight=False,
        )
    for row in table[table["status"] != "ok"].itertuples():
        err_console.print(
            f"failed: {row.run}: {row.error}", markup=False, highlight=False, soft_wrap=True
        )
    if failed:
        raise typer.Exit(1)


@app.command()
def archsearch(
    scenario: Annotated[Path, typer.Argument(help="Scenario TOML file (the fleet to fit).")],
    models: Annotated[str, typer.Option(help="Depths: built-in model names.")] = "tiny,compact",
    widths: Annotated[str, typer.Option(help="Widths to try.")] = "1,0.5,0.25,0.125",
    rounds: Annotated[int, typer.Option(help="Cloud rounds of each short run.")] = 5,
    seeds: Annotated[int, typer.Option(help="Seeds per candidate.")] = 1,
    out: Annotated[
        Path | None, typer.Option(help="Sweep folder (default: runs/NAME-archsearch).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Local processes (default: one per core).")
    ] = None,
) -> None:
    """Score (model, width) candidates per device profile after a short run: accuracy
    against seconds and joules per round, each profile's Pareto front marked
    (archsearch.csv, archsearch.png in the sweep folder)."""
    from hierfl.archsearch import search

    folder = out or Path("runs") / f"{scenario.stem}-archsearch"
    table, failed = search(scenario, _names(models, "--models"), _widths(widths), rounds, seeds,
                           folder, workers)
    shown = table.assign(pareto=table["pareto"].map({True: "*", False: ""}))
    _print_table("candidates per profile (* on the Pareto front)", list(shown.columns),
                 [[_cell(v) for v in row] for row in shown.itertuples(index=False)])
    for error in failed:
        out_console.print(f"not run: {error}", highlight=False, soft_wrap=True)
    out_console.print(f"wrote archsearch.csv, archsearch.png in {folder}", highlight=False)


def _names(text: str, option: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise HierflError(f"{option}: give at least one name: {text!r}")
    return names


def _widths(text: str) -> list[float]:
    """``--widths`` as floats in (0, 1]."""
    try:
        widths = [float(w) for w in _names(text, "--widths")]
    except ValueError:
        raise HierflError(f"--widths: must be numbers in (0, 1]: {text!r}") from None
    if any(not 0 < w <= 1 for w in widths):
        raise HierflError(f"--widths: must be numbers in (0, 1]: {text!r}")
    return widths


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command()
def validate(
    scenarios: Annotated[list[Path], typer.Argument(help="Scenario TOML files.")],
    set_: Annotated[
        list[str], typer.Option("--set", help="Override KEY.PATH=VALUE (repeat).")
    ] = [],  # noqa: B006
) -> None:
    """Check scenario files; print each resolved scenario (defaults filled in) or its errors.

    Code a scenario names (package.module:Name) is found and read, never run.
    """
    failed = False
    for path in scenarios:
        try:
            scenario = load_scenario(path, set_)
            check_references(scenario)
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
    table = Table(title="built-in profiles", show_lines=True)
    for column in ("name", "memory", "MFLOP/s", "link", "battery", "power W"):
        table.add_column(column)
    for name, p in BUILTIN_PROFILES.items():
        battery = "mains" if p.battery_mah is None else f"{p.battery_mah:g} mAh\n{p.voltage_v:g} V"
        power = (
            f"compute {p.power_compute_w:g}\ntx {p.power_tx_w:g}\nrx {p.power_rx_w:g}\n"
            f"idle {p.power_idle_w:g}"
        )
        if p.tail_s > 0:
            power += f"\ntail {p.power_tail_w:g} for {p.tail_s:g} s"
        table.add_row(name, _kib(p.memory_kb), f"{p.compute_mflops:,.0f}", _link(p), battery, power)
    out_console.print(table)
    for name, p in BUILTIN_PROFILES.items():
        out_console.print(f"[bold]{name}[/bold]: {escape(p.source)}", markup=True, soft_wrap=True)


def _link(p: Profile) -> str:
    """'10,000 kbps', or '6,000 up' over '13,000 down kbps' when the directions differ; latency."""
    if p.up_kbps == p.down_kbps:
        rate = f"{p.up_kbps:,.0f} kbps"
    else:
        rate = f"{p.up_kbps:,.0f} up\n{p.down_kbps:,.0f} down kbps"
    return f"{rate}\n{p.latency_ms:g} ms"


def _kib(memory_kb: float) -> str:
    """512 KiB, 4 MiB, 32 GiB."""
    for unit in ("KiB", "MiB"):
        if memory_kb < 1024:
            return f"{memory_kb:g} {unit}"
        memory_kb /= 1024
    return f"{memory_kb:g} GiB"


INTERRUPTED = 130


def _interrupted() -> None:
    err_console.print("interrupted: a run folder keeps its last checkpoint (hierfl run --resume)")
    sys.exit(INTERRUPTED)


def _fail(message: str) -> None:
    """One line on stderr, exit status 2."""
    err_console.print(f"error: {message}", highlight=False, soft_wrap=True)
    sys.exit(2)


def main() -> None:
    """Console entry point: one line and exit 2 for bad input, no traceback unless --debug."""
    try:
        code = app(standalone_mode=False)
    except HierflError as error:
        if _state["debug"]:
            traceback.print_exc()
        _fail(str(error))
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort as abort:  # click turns EOFError into Abort, as it does Ctrl-C
        if isinstance(abort.__context__, EOFError):
            _fail(f"unexpected end of input: {abort.__context__}")
        _interrupted()
    except KeyboardInterrupt:
        _interrupted()
    except OSError as error:  # the system refused a file: say which, and why
        if _state["debug"]:
            traceback.print_exc()
        _fail(f"{error.filename or 'system'}: {error.strerror or error}")
    except Exception as error:  # click usage errors carry their own exit code
        usage_code = getattr(error, "exit_code", None)
        if usage_code is None:
            raise
        if hasattr(error, "show"):
            error.show()
        sys.exit(usage_code)
    if code == INTERRUPTED:  # typer returns 130 for Ctrl-C
        _interrupted()
    sys.exit(code if isinstance(code, int) else 0)
