"""The package's front door: lazy public names, and the command's entry point."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

import hierfl


def test_import_hierfl_alone_imports_no_heavy_library():
    code = "import sys, hierfl; print(sorted({'torch', 'pandas', 'simpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_resolve_to_their_modules():
    from hierfl.results import Result
    from hierfl.sim.runner import resume, simulate

    assert hierfl.run is simulate and hierfl.resume is resume and hierfl.Result is Result
    assert set(hierfl.__all__) <= set(dir(hierfl))


def test_load_result_reads_a_run_folder_back(make_scenario, tmp_path):
    """hierfl.load_result(dir) is public and returns the Result that was written there."""
    assert "load_result" in hierfl.__all__
    result = hierfl.run(make_scenario())
    again = hierfl.load_result(result.write(tmp_path / "run"))
    for key in ("name", "seed", "scenario", "sim_time_s", "energy_j", "bytes_up"):
        assert again.summary[key] == result.summary[key]
    assert again.rounds.equals(result.rounds) and len(again.events) == len(result.events)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        hierfl.no_such_name  # noqa: B018


def test_launch_runs_the_cli_with_collection_enabled_again(monkeypatch):
    import hierfl.cli
    from hierfl.launch import main

    seen = []
    monkeypatch.setattr(hierfl.cli, "main", lambda: seen.append(gc.isenabled()))
    main()
    assert seen == [True]
    gc.unfreeze()


def test_all_lists_exactly_the_lazy_names():
    assert sorted(hierfl.__all__) == sorted(hierfl._WHERE)


def test_launch_leaves_a_paused_collector_paused(monkeypatch):
    import hierfl.cli
    from hierfl.launch import main

    monkeypatch.setattr(hierfl.cli, "main", lambda: None)
    gc.disable()
    try:
        main()
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
