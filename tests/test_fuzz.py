"""Fuzzed input: any TOML-like structure or --set string is a Scenario or one clear error."""

from __future__ import annotations

import math
import subprocess
import sys

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hierfl.errors import ScenarioError
from hierfl.scenario import Scenario, apply_overrides, parse_scenario

VALID = {
    "seed": 1,
    "run": {"cloud_rounds": 2, "learning": False},
    "devices": [{"profile": "mcu", "count": 2}],
}
KEYS = [
    "name",
    "seed",
    "run",
    "data",
    "model",
    "compression",
    "selection",
    "topology",
    "devices",
    "profiles",
    "cloud_rounds",
    "edge_rounds",
    "batch_size",
    "learning_rate",
    "kind",
    "samples_per_device",
    "alpha",
    "quantize",
    "prune_ratio",
    "policy",
    "fraction",
    "mode",
    "edges",
    "backhaul",
    "bandwidth_kbps",
    "latency_ms",
    "profile",
    "count",
    "mcu",
    "memory_kb",
    "battery_mah",
    "codec",
    "target_accuracy",
    "device",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=8))
structures = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=30,
)
paths = st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(".".join)


def outcome(raw: object) -> Scenario | None:
    """Parse ``raw``; only a Scenario or a ScenarioError with one-line messages is allowed."""
    try:
        return parse_scenario(raw)  # type: ignore[arg-type]
    except ScenarioError as error:
        assert error.messages and all("\n" not in m and m for m in error.messages)
        assert str(error)
        return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, structures, max_size=6))
@example({"\n.": 1})  # once gave a two-line message: unknown keys are now quoted
def test_random_structures_give_a_scenario_or_a_clear_error(raw):
    """Random nested tables, wrong types, huge and non-finite numbers, unicode keys."""
    outcome(raw)


@settings(max_examples=300, deadline=None)
@given(paths, structures)
def test_random_value_at_a_known_path(path, value):
    """A valid scenario with one key set to anything is a Scenario or a clear error."""
    raw = apply_overrides(VALID, [])
    node = raw
    *parents, last = path.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value
    scenario = outcome(raw)
    if scenario is not None:
        assert scenario.run.cloud_rounds >= 1 and scenario.n_devices >= 1
        assert all(math.isfinite(v) for v in (scenario.run.learning_rate, scenario.data.alpha))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_random_set_strings(assignment):
    """Any --set string is applied and validated, or refused with a ScenarioError."""
    try:
        raw = apply_overrides(VALID, [assignment])
    except ScenarioError:
        return
    outcome(raw)


def test_cli_bad_set_is_one_line_and_writes_nothing(tmp_path):
    """Odd --set strings reach the CLI user as one line and exit 2, with no run folder."""
    scenario = tmp_path / "s.toml"
    scenario.write_text('[[devices]]\nprofile = "mcu"\ncount = 1\n')
    for assignment in ["run=3", "run.cloud_rounds=[1,", "devices.5.count=2", "=1", "ü.ß=∞"]:
        out = tmp_path / "out"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "hierfl",
                "run",
                str(scenario),
                "--out",
                str(out),
                "--set",
                assignment,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, (assignment, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert not out.exists()


def test_fleet_too_large_for_memory_is_refused_early(tmp_path):
    """A fleet whose estimate exceeds this machine's memory is refused before anything is built."""
    scenario = tmp_path / "huge.toml"
    scenario.write_text(
        '[run]\nlearning = false\n[[devices]]\nprofile = "mcu"\ncount = 1000000000\n'
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "hierfl", "run", str(scenario), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "1,000,000,000 devices" in done.stderr and "GiB" in done.stderr
    assert not out.exists()


def test_memory_estimate_on_a_hand_case():
    """2 devices, 3 rounds, timing only: 2 * 2048 + 2 * 3 * 3 * 227 bytes, plus 256 MiB for
    writing the outputs (trace.json's chunks, the figures)."""
    from hierfl.limits import estimate_bytes

    scenario = parse_scenario({**VALID, "run": {"cloud_rounds": 3, "learning": False}})
    expected = 2 * 2048 + 2 * 3 * 3 * (49 * 3 + 80) + 2**28
    assert estimate_bytes(scenario, input_elements=32, n_params=100) == expected
