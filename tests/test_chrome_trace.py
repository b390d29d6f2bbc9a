"""The Chrome trace export follows the trace-event format and keeps every event of the run."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import pytest

import hierfl
from hierfl import chrome_trace as chrome_trace_module
from hierfl.chrome_trace import chrome_trace, counter_records, write_chrome_trace
from hierfl.results import Result

WEAK = {  # an mcu-like board whose 0.9 J battery empties during its first round
    "memory_kb": 512, "compute_mflops": 100, "bandwidth_kbps": 100, "latency_ms": 50,
    "battery_mah": 0.1, "voltage_v": 2.5, "power_compute_w": 0.2, "power_tx_w": 0.95,
    "power_rx_w": 0.3, "power_idle_w": 0.0,
}
TINY = {**WEAK, "memory_kb": 1, "battery_mah": 500}  # cannot hold the model: skipped


def faulty_raw(**topology) -> dict:
    """Timing-only: 2 edges, devices that drop out, devices that are skipped, phones."""
    return {
        "name": "faulty", "seed": 3,
        "run": {"cloud_rounds": 2, "learning": False},
        "selection": {"policy": "all", "min_battery": 0.0},
        "topology": {"edges": 2, **topology},
        "profiles": {"weak": WEAK, "tiny": TINY},
        "devices": [{"profile": "weak", "count": 2}, {"profile": "tiny", "count": 1},
                    {"profile": "mobile", "count": 3}],
    }


@pytest.fixture(scope="module")
def result() -> Result:
    return hierfl.run(hierfl.parse_scenario(faulty_raw()))


@pytest.fixture(scope="module")
def trace(result: Result) -> dict:
    return chrome_trace(result)


def records(trace: dict, *phases: str) -> list[dict]:
    return [e for e in trace["traceEvents"] if e["ph"] in phases]


def names(trace: dict, kind: str) -> dict[tuple[int, int], str]:
    """(pid, tid) -> name from the process_name or thread_name metadata events."""
    return {(e["pid"], e["tid"]): e["args"]["name"]
            for e in records(trace, "M") if e["name"] == kind}


def test_run_has_every_kind_of_event(result: Result) -> None:
    """The fixture exercises intervals, aggregations, skips and dropouts."""
    kinds = set(result.events["kind"].astype(str))
    assert {"download", "compute", "upload", "edge_aggregate", "cloud_aggregate", "skip",
            "dropout"} <= kinds


def test_valid_json_object(result: Result, trace: dict, tmp_path) -> None:
    """The trace is a JSON object with traceEvents and displayTimeUnit, and strict JSON."""
    assert set(trace) >= {"traceEvents", "displayTimeUnit"}
    assert trace["displayTimeUnit"] in ("ms", "ns")
    path = write_chrome_trace(result, tmp_path / "trace.json")
    loaded = json.loads(path.read_text())
    assert loaded == json.loads(json.dumps(trace, allow_nan=False))
    assert [p.name for p in tmp_path.iterdir()] == ["trace.json"]


def test_every_event_has_required_fields(trace: dict) -> None:
    """Every event names its phase, process, thread, name and timestamp."""
    for event in trace["traceEvents"]:
        assert {"ph", "pid", "tid", "name", "ts"} <= set(event), event
        assert isinstance(event["pid"], int) and isinstance(event["tid"], int)
        assert event["ph"] in ("X", "i", "C", "M")


def test_one_record_per_event_in_microseconds(result: Result, trace: dict) -> None:
    """Each events row becomes one X or i record, in order, at ts = t_start * 1e6."""
    rows = records(trace, "X", "i")
    events = result.events
    assert len(rows) == len(events)
    for row, (_, event) in zip(rows, events.iterrows(), strict=True):
        assert row["name"] == str(event["kind"])
        assert row["ts"] == pytest.approx(event["t_start"] * 1e6, rel=1e-12, abs=1e-9)
        if row["ph"] == "X":
            assert row["dur"] >= 0
            assert row["dur"] == pytest.approx((event["t_end"] - event["t_start"]) * 1e6,
                                               rel=1e-9, abs=1e-9)
        assert row["args"]["cloud_round"] == event["cloud_round"]
        assert row["args"]["bytes"] == event["bytes"]
        assert row["args"]["energy_j"] == pytest.approx(event["energy_j"])


def test_phases_are_slices_and_faults_instants(trace: dict) -> None:
    """Intervals and aggregations are complete events; skip/dropout/late are scoped instants."""
    for row in records(trace, "X", "i"):
        if row["name"] in ("skip", "dropout", "late"):
            assert row["ph"] == "i" and row["s"] in ("g", "p", "t")
        else:
            assert row["ph"] == "X"


def test_every_track_is_named(trace: dict) -> None:
    """Every pid and (pid, tid) used has a name and a sort index."""
    processes = {pid for pid, _ in names(trace, "process_name")}
    threads = set(names(trace, "thread_name"))
    sorted_processes = {e["pid"] for e in records(trace, "M")
                        if e["name"] == "process_sort_index"}
    sorted_threads = {(e["pid"], e["tid"]) for e in records(trace, "M")
                      if e["name"] == "thread_sort_index"}
    for event in records(trace, "X", "i", "C"):
        assert event["pid"] in processes and event["pid"] in sorted_processes
        assert (event["pid"], event["tid"]) in threads & sorted_threads


def test_devices_on_one_thread_under_their_edge(result: Result, trace: dict) -> None:
    """All events of a device share one thread, of its own, in its edge's process."""
    process = {pid: name for (pid, _), name in names(trace, "process_name").items()}
    thread = names(trace, "thread_name")
    used = defaultdict(set)
    for row in records(trace, "X", "i"):
        used[thread[row["pid"], row["tid"]]].add((row["pid"], row["tid"]))
    devices = dict(zip(result.devices["device"], result.devices["edge"], strict=True))
    seen = set()
    for device in result.events["node"].astype(str).unique():
        if device not in devices:
            continue
        (track,) = used[device]
        assert process[track[0]] == devices[device]
        assert track not in seen
        seen.add(track)


def test_aggregations_on_aggregator_threads(trace: dict) -> None:
    """Edge and cloud aggregations sit on the aggregator thread of their process."""
    process = {pid: name for (pid, _), name in names(trace, "process_name").items()}
    thread = names(trace, "thread_name")
    for row in records(trace, "X"):
        if row["name"] in ("edge_aggregate", "edge_upload", "cloud_download"):
            assert process[row["pid"]].startswith("edge-")
            assert thread[row["pid"], row["tid"]] == "aggregator"
        if row["name"] == "cloud_aggregate":
            assert process[row["pid"]] == "cloud"
            assert thread[row["pid"], row["tid"]] == "aggregator"


def test_battery_counter(result: Result, trace: dict) -> None:
    """The counter starts at 100% and follows rounds.mean_battery at each round's end."""
    counters = [c for c in records(trace, "C") if c["name"] == "mean battery"]
    for counter in counters:
        assert counter["args"] and all(isinstance(v, int | float) and math.isfinite(v)
                                       for v in counter["args"].values())
    values = [c["args"]["battery_pct"] for c in counters]
    expected = [100.0, *(100 * result.rounds["mean_battery"])]
    assert values == pytest.approx(expected)
    times = [c["ts"] for c in counters]
    assert times == pytest.approx([0.0, *(1e6 * result.rounds["sim_time_s"])])


def test_devices_under_the_cloud_have_their_own_process() -> None:
    """Without edges (cloud_only), devices go to a process beside the cloud's."""
    raw = faulty_raw(mode="cloud_only", edges=0)
    result = hierfl.run(hierfl.parse_scenario(raw))
    trace = chrome_trace(result)
    process = {pid: name for (pid, _), name in names(trace, "process_name").items()}
    for row in records(trace, "X", "i"):
        mine = row["name"] in ("cloud_aggregate", "nic_tx", "nic_rx", "idle")
        expected = "cloud" if mine else "devices under the cloud"
        assert process[row["pid"]] == expected


def test_streaming_in_small_chunks_gives_the_same_trace(result: Result, trace: dict,
                                                         monkeypatch) -> None:
    """The file is written a chunk of rows at a time; the chunk size changes no record."""
    monkeypatch.setattr(chrome_trace_module, "CHUNK_ROWS", 3)
    assert chrome_trace(result) == trace


def test_names_that_need_escaping_are_escaped() -> None:
    """A profile named with a quote and a backslash still gives valid JSON and its name."""
    raw = faulty_raw()
    raw["profiles"] = {'we"ak\\': WEAK}
    raw["devices"] = [{"profile": 'we"ak\\', "count": 2}]
    result = hierfl.run(hierfl.parse_scenario(raw))
    threads = set(names(chrome_trace(result), "thread_name").values())
    assert {'we"ak\\-0', 'we"ak\\-1'} <= threads


def test_extra_counter_records_follow_the_events(result: Result, tmp_path) -> None:
    """Records passed as ``extra`` (e.g. another counter track) are written as given."""
    extra = list(counter_records("link load", 1, [0.0, 2.5], {"pct": [0.0, 40.0]}))
    path = write_chrome_trace(result, tmp_path / "trace.json", extra=extra)
    written = json.loads(path.read_text())["traceEvents"]
    assert written[-2:] == [
        {"name": "link load", "ph": "C", "pid": 1, "tid": 0, "ts": 0.0, "args": {"pct": 0.0}},
        {"name": "link load", "ph": "C", "pid": 1, "tid": 0, "ts": 2.5e6, "args": {"pct": 40.0}},
    ]
