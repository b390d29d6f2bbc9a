"""The examples of docs/extending.md run: a custom model, selection policy and codec."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hierfl

ROOT = Path(__file__).parents[1]


@pytest.fixture
def custom(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import custom as module

    return module


def small(*overrides: str) -> hierfl.Scenario:
    return hierfl.load_scenario(
        ROOT / "scenarios" / "tutorial066.toml", ["run.cloud_rounds=2", *overrides]
    )


def test_custom_model_sets_the_costs(custom):
    """A 'package.module:Class' model trains, and its FLOPs and size drive payloads."""
    result = hierfl.run(
        small("model.name=custom:Wide", "compression.quantize=none", "compression.prune_ratio=0")
    )
    n_params = 32 * 256 + 256 + 256 * 10 + 10
    assert result.summary["model"]["n_params"] == n_params
    assert result.summary["model"]["forward_flops"] == 2 * (32 * 256 + 256 * 10)
    uploads = result.events[result.events["kind"] == "upload"]
    assert set(uploads["bytes"]) == {4 * n_params}


def test_custom_family_trains_its_variants(custom):
    """A custom class taking ``width`` is a family: each device uploads its variant's slice."""
    result = hierfl.run(small(
        "model.name=custom:Scalable", "model.variants=[1, 0.25]", "compression.quantize=none",
        "compression.prune_ratio=0", "profiles.mcu.memory_kb=60",
    ))
    sizes = {1.0: 32 * 256 + 256 + 256 * 10 + 10, 0.25: 32 * 64 + 64 + 64 * 10 + 10}
    uploads = result.events[result.events["kind"] == "upload"]
    width = result.devices.set_index("device")["width"]
    sent = uploads.groupby(uploads["node"].astype(str))["bytes"].first()
    assert (sent == 4 * width[sent.index].map(sizes)).all()
    assert sorted(set(width)) == [0.25, 1.0]


def test_custom_policy_by_name_and_by_object(custom):
    """A named policy and the same function passed from Python select the same devices."""
    by_name = hierfl.run(small("selection.policy=custom:most_charged"))
    by_object = hierfl.run(small(), selection=custom.most_charged)
    for result in (by_name, by_object):
        trained = result.events[result.events["kind"] == "compute"]
        per_edge_round = trained.groupby(["edge", "cloud_round"], observed=True).size()
        assert (per_edge_round == 5).all()  # half of 10 devices per edge, at least two
    assert by_name.events.equals(by_object.events)


def test_custom_codec_sets_payload_and_round_trips(custom):
    """The codec's real bytes set upload sizes; float16 round trip is within its precision."""
    codec = custom.Float16Codec()
    tensors = {"w": torch.randn(3, 4), "b": torch.randn(4)}
    specs = [("w", (3, 4)), ("b", (4,))]
    payload = codec.encode(tensors)
    assert len(payload) == codec.payload_bytes(specs) == 2 * 16
    decoded = codec.decode(payload, specs)
    assert torch.allclose(decoded["w"], tensors["w"], atol=1e-2)
    result = hierfl.run(small("compression.codec=custom:Float16Codec"))
    uploads = result.events[result.events["kind"] == "upload"]
    assert set(uploads["bytes"]) == {2 * result.summary["model"]["n_params"]}
    assert result.rounds["accuracy"].notna().all()


def test_custom_optimiser_takes_the_yogi_step(custom):
    """The FedYogi example steps as Reddi et al. write it, and a run uses it at the cloud."""
    settings = hierfl.scenario.AggregationConfig(server_lr=0.5, beta1=0.5, beta2=0.75, tau=1.0)
    yogi = custom.FedYogi(settings, 1)
    # delta 2: m = 0.5 * 2 = 1; v = 1 - 0.25 * 4 * sign(1 - 4) = 2; 0.5 * 1 / (sqrt 2 + 1)
    step = yogi.step(torch.zeros(1), torch.full((1,), 2.0))
    assert torch.allclose(step, torch.tensor([0.5 / (2**0.5 + 1)]))
    result = hierfl.run(small("aggregation.cloud_optimizer=custom:FedYogi"))
    assert result.summary["scenario"]["aggregation"]["cloud_optimizer"] == "custom:FedYogi"
    assert result.rounds["accuracy"].notna().all()


def test_the_documented_command_runs(tmp_path):
    """The command at the end of docs/extending.md works as written, after `make demo` too.

    `make demo` fills runs/tutorial066, so the command must name its own --out folder.
    """
    command = (ROOT / "docs" / "extending.md").read_text().split("```\nPYTHONPATH=examples ")[1]
    args = command.split("```")[0].replace("\\\n", " ").split()
    assert args[0] == ".venv/bin/hierfl"
    out = args.index("--out") + 1
    assert args[out] != "runs/tutorial066"
    args[out] = str(tmp_path / "run")
    done = subprocess.run(
        [sys.executable, "-m", "hierfl", *args[1:], "--quiet", "--no-plots"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": "examples"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "summary.json").exists()


def test_a_codec_whose_bytes_disagree_with_its_size_is_refused(custom):
    """Uploads are timed by payload_bytes: an encode that writes more stops the run."""

    class Padded(custom.Float16Codec):
        def encode(self, tensors):
            return super().encode(tensors) + b"\0"

    with pytest.raises(hierfl.ScenarioError, match=r"compression\.codec: encode wrote \d+ bytes"):
        hierfl.run(small("run.cloud_rounds=1"), codec=Padded())


def test_a_codec_subclass_is_called_for_each_update():
    """A subclass of the built-in Codec keeps its own encode and decode (no bulk path)."""
    from hierfl.compression import Codec

    calls = {"encode": 0, "decode": 0}

    class Counted(Codec):
        def encode(self, tensors):
            calls["encode"] += 1
            return super().encode(tensors)

        def decode(self, payload, specs):
            calls["decode"] += 1
            return super().decode(payload, specs)

    result = hierfl.run(small("run.cloud_rounds=1"), codec=Counted("int8"))
    uploads = (result.events["kind"].isin(["upload", "edge_upload"])).sum()
    assert calls["encode"] == uploads and calls["decode"] == uploads
