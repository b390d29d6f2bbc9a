"""Heterogeneous models (HeteroFL): width families, slice aggregation, per-variant costs, tiers."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hierfl
from hierfl.aggregation import Slice, slice_fedavg
from hierfl.errors import ScenarioError
from hierfl.learn.batched import BatchedTrainer
from hierfl.learn.data import make_data
from hierfl.learn.family import (
    FamilyTrainer,
    assign_variants,
    build_family,
    variant_fits,
)
from hierfl.learn.models import build_model
from hierfl.learn.trainer import ParamSpace, ReferenceTrainer, evaluate
from hierfl.scenario import DataConfig
from hierfl.sim.engine import prepare

# compact on 32 inputs, 10 classes, batch 8: (params, forward FLOPs, train bytes) by hand
COMPACT = {
    1.0: ((32 * 64 + 64) + (64 * 32 + 32) + (32 * 10 + 10), 2 * (32 * 64 + 64 * 32 + 32 * 10),
          4 * (2 * 4522 + 8 * (32 + 32 + 64 + 64 + 32 + 32 + 10))),
    0.5: ((32 * 32 + 32) + (32 * 16 + 16) + (16 * 10 + 10), 2 * (32 * 32 + 32 * 16 + 16 * 10),
          4 * (2 * 1754 + 8 * (32 + 32 + 32 + 32 + 16 + 16 + 10))),
    0.25: ((32 * 16 + 16) + (16 * 8 + 8) + (8 * 10 + 10), 2 * (32 * 16 + 16 * 8 + 8 * 10),
           4 * (2 * 754 + 8 * (32 + 32 + 16 + 16 + 8 + 8 + 10))),
}


def test_compact_family_by_hand():
    """A width-r compact scales both hidden layers to ceil(r * units); counts match by hand."""
    family = build_family("compact", (32,), 10, 0, [1, 0.5, 0.25])
    assert family.widths == [0.25, 0.5, 1.0]
    for variant in family.variants:
        params, flops, needed = COMPACT[variant.width]
        assert (variant.stats.n_params, variant.stats.forward_flops) == (params, flops)
        assert variant.train_bytes(8) == needed
    assert COMPACT[0.5] == (1754, 3392, 19472)


@pytest.mark.parametrize(("name", "shape"), [("tiny", (32,)), ("mobile", (32,)),
                                              ("dscnn", (1, 8, 8))])
def test_variant_is_leading_block_of_full(name, shape):
    """Each variant parameter is the leading block of the full model's parameter of its name."""
    family = build_family(name, shape, 10, 3, [1, 0.5, 0.25, 0.125])
    full = dict(family.full.model.named_parameters())
    flat = family.full.space.vector(family.full.model)
    for variant in family.variants:
        sliced = variant.space.unflatten(flat[variant.index])
        for pname, tensor in sliced.items():
            block = full[pname][tuple(slice(0, n) for n in tensor.shape)]
            assert torch.equal(tensor, block), (variant.width, pname)


def test_full_width_is_the_plain_model():
    """The family's full model is the model a run without variants builds (same weights)."""
    family = build_family("compact", (32,), 10, 11, [0.5, 1])
    plain = build_model("compact", (32,), 10, 11)
    assert torch.equal(ParamSpace.of(plain).vector(plain),
                       family.full.space.vector(family.full.model))


def test_slice_fedavg_hand_numbers():
    """HeteroFL by hand: a 2x2 Linear (weight then bias); a width-1 update from 1 sample,
    two width-1/2 updates (its [0, 0] weight and bias[0]) from 2 and 1 samples, as deltas.

    Element w00 is held by all three: (1*1 + 2*4 + 1*7) / 4 = 4; b0 likewise
    (1*2 + 2*5 + 1*8) / 4 = 5; the other elements only by the full update: its values.
    """
    base = torch.tensor([10.0, 10.0, 10.0, 10.0, 20.0, 20.0])  # w00 w01 w10 w11 b0 b1
    full = Slice(torch.arange(6), torch.tensor([[1.0, 3.0, 6.0, 9.0, 2.0, 11.0]]), [1])
    half = Slice(torch.tensor([0, 4]), torch.tensor([[4.0, 5.0], [7.0, 8.0]]), [2, 1])
    averaged = slice_fedavg(base, [full, half], deltas=True)
    assert averaged.tolist() == [14.0, 13.0, 16.0, 19.0, 25.0, 31.0]
    weights = slice_fedavg(base, [half], deltas=False)
    assert weights.tolist() == [(2 * 4 + 7) / 3, 10.0, 10.0, 10.0, (2 * 5 + 8) / 3, 20.0]


def _reference(base, updates, deltas):
    """A plain HeteroFL loop: per element, the sample-weighted mean of the updates holding it."""
    out = base.double().clone()
    for e in range(len(base)):
        total = weight = 0.0
        for index, row, samples in updates:
            hits = (index == e).nonzero()
            if len(hits):
                total += samples * float(row[hits[0, 0]])
                weight += samples
        if weight:
            out[e] = (base[e] + total / weight) if deltas else total / weight
    return out.float()


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_slice_fedavg_matches_plain_loop(data):
    """slice_fedavg equals an element-by-element loop over random nested slices and weights."""
    size = data.draw(st.integers(1, 12))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    base = torch.tensor(rng.normal(size=size), dtype=torch.float32)
    updates, slices = [], []
    for _ in range(data.draw(st.integers(1, 4))):
        held = torch.tensor(np.sort(rng.choice(size, rng.integers(1, size + 1), replace=False)))
        rows = torch.tensor(rng.normal(size=(rng.integers(1, 4), len(held))), dtype=torch.float32)
        samples = rng.integers(1, 50, size=len(rows)).tolist()
        slices.append(Slice(held, rows, samples))
        updates += [(held, row, n) for row, n in zip(rows, samples, strict=True)]
    deltas = data.draw(st.booleans())
    expected = _reference(base, updates, deltas)
    torch.testing.assert_close(slice_fedavg(base, slices, deltas), expected)


def test_assign_widest_fitting_variant():
    """Each device gets the widest variant its memory holds (KiB); none fits: -1. With a
    compute budget, a variant whose local training takes longer does not fit either."""
    family = build_family("compact", (32,), 10, 0, [1, 0.5, 0.25])
    memory_kb = np.array([9.0, 10.0, 19.0, 20.0, 43.0, 44.0])  # 9936, 19472, 44688 bytes
    fits = variant_fits(family, memory_kb, 8)
    assert assign_variants(fits).tolist() == [-1, 0, 0, 1, 1, 2]
    samples, mflops = np.full(2, 40), np.full(2, 50_000.0)
    # full: 3 * 8832 * 40 * 2 / 5e10 = 4.24e-5 s; half: 1.63e-5 s
    budget = (samples, mflops, 2, 3e-5)
    assert assign_variants(variant_fits(family, np.full(2, 44.0), 8, budget)).tolist() == [1, 1]


def _mixed(make_scenario, **model):
    """One mcu that holds only the width-1/4 compact, one mobile that holds the full one."""
    return make_scenario(
        run={"cloud_rounds": 1},
        model={"name": "compact", "variants": [1, 0.5, 0.25], **model},
        devices=[{"profile": "mcu", "count": 1}, {"profile": "mobile", "count": 1}],
        profiles={"mcu": {"memory_kb": 10}},
    )


def test_timing_uses_each_devices_variant(make_scenario):
    """Download and upload carry the device's variant (4 bytes an element, dense), and its
    compute lasts 3 * forward_flops(variant) * samples * epochs / compute_mflops."""
    result = hierfl.run(_mixed(make_scenario))
    events = result.events.assign(kind=result.events["kind"].astype(str),
                                  node=result.events["node"].astype(str))
    for device, width, mflops in (("mcu-0", 0.25, 100), ("mobile-1", 1.0, 50_000)):
        mine = events[events["node"] == device].set_index("kind")
        params, flops, _ = COMPACT[width]
        assert mine.loc["download", "bytes"] == mine.loc["upload", "bytes"] == 4 * params
        seconds = mine.loc["compute", "t_end"] - mine.loc["compute", "t_start"]
        assert seconds == pytest.approx(3 * flops * 40 * 2 / (mflops * 1e6), rel=1e-12)
    assert result.devices["width"].tolist() == [0.25, 1.0]
    assert [t["width"] for t in result.summary["tiers"]] == [0.25, 0.5, 1.0]
    assert [t["profiles"] for t in result.summary["tiers"]] == [{"mcu": 1}, {}, {"mobile": 1}]


def test_memory_and_time_assign_narrower(make_scenario):
    """assign = memory_and_time: an mcu whose memory holds the full compact but whose
    100 MFLOP/s cannot train it within 4 ms trains the width-1/4 variant
    (3 * 1440 * 40 * 2 / 1e8 = 3.5 ms; width 1/2 would take 8.1 ms)."""
    raw = {"name": "compact", "variants": [1, 0.5, 0.25]}
    devices = [{"profile": "mcu", "count": 1}, {"profile": "mobile", "count": 1}]
    by_memory = hierfl.run(make_scenario(model=raw, devices=devices))
    assert by_memory.devices["width"].tolist() == [1.0, 1.0]
    timed = make_scenario(model={**raw, "assign": "memory_and_time", "compute_budget_s": 4e-3},
                          devices=devices)
    assert hierfl.run(timed).devices["width"].tolist() == [0.25, 1.0]


def test_family_trainer_equals_reference_on_the_slice():
    """A device's job trains its variant from its slice of the start: equal to the plain
    reference loop on the variant model from that slice; jobs are grouped per variant."""
    family = build_family("compact", (32,), 10, 0, [1, 0.5])
    counts = np.array([24, 17, 30])
    data = make_data(DataConfig(samples_per_device=(17, 30)), counts, np.random.default_rng(1))
    variant_of = np.array([0, 1, 0])
    trainer = FamilyTrainer(family, variant_of, data, 2, 8, 0.05)
    start = family.full.space.vector(family.full.model)
    jobs = [trainer.submit(d, start, (1, d)) for d in range(3)]
    assert all(isinstance(t, BatchedTrainer) for t in trainer.trainers)
    assert [len(t.pending) for t in trainer.trainers] == [2, 1]
    for device, job in enumerate(jobs):
        variant = family.variants[variant_of[device]]
        reference = ReferenceTrainer(variant.model, data, 2, 8, 0.05)
        expected = reference.train(reference.submit(device, start[variant.index], (1, device)))
        torch.testing.assert_close(job.result(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("payload", ["delta", "weights"])
def test_edges_then_cloud_equal_flat_heterofl(make_scenario, payload):
    """Two edges averaging slices, then the cloud weighting each edge's slices by the samples
    behind them, give the same global model as one flat HeteroFL average (cloud_only)."""
    models = {}
    for mode in ("hierarchical", "cloud_only"):
        scenario = make_scenario(
            run={"cloud_rounds": 2, "learning": True, "learning_rate": 0.1},
            data={"samples_per_device": [20, 40]},
            model={"name": "compact", "variants": [1, 0.5, 0.25]},
            compression={"payload": payload},
            topology={"mode": mode, "edges": 2},
            devices=[{"profile": "mcu", "count": 3}, {"profile": "soc", "count": 2},
                     {"profile": "mobile", "count": 2}],
            profiles={"mcu": {"memory_kb": 10}, "soc": {"memory_kb": 20}},
        )
        result = hierfl.run(scenario)
        models[mode] = torch.cat([t.reshape(-1) for t in result.model.values()])
        assert sorted(set(result.devices["width"])) == [0.25, 0.5, 1.0]
    torch.testing.assert_close(models["hierarchical"], models["cloud_only"], rtol=0, atol=1e-6)


def test_tiers_score_each_sub_model(make_scenario):
    """summary tiers: each variant's slice of the final model on the test set (and, per
    round, rounds.csv accuracy_w<width>, whence its time to target); devices.csv: each
    device's own variant on its own data (pooled per tier in local_accuracy)."""
    scenario = make_scenario(
        run={"cloud_rounds": 3, "learning": True, "learning_rate": 0.1,
             "target_accuracy": 0.11},
        model={"name": "compact", "variants": [1, 0.25]},
        devices=[{"profile": "mcu", "count": 2}, {"profile": "mobile", "count": 1}],
        profiles={"mcu": {"memory_kb": 10}},
    )
    sim = prepare(scenario)
    result = hierfl.run(scenario)
    flat = torch.cat([t.reshape(-1) for t in result.model.values()])
    data = sim.trainer.data
    for tier, variant in zip(result.summary["tiers"], sim.family.variants, strict=True):
        accuracy, _ = evaluate(variant.model, variant.space, flat[variant.index],
                               data.x_test, data.y_test)
        assert tier["test_accuracy"] == pytest.approx(accuracy)
        column = result.rounds[f"accuracy_w{variant.width:g}"]
        assert column.iloc[-1] == tier["test_accuracy"]
        reached = np.flatnonzero(column.to_numpy() >= 0.11)
        expected = result.rounds["sim_time_s"].iloc[reached[0]] if len(reached) else None
        assert tier["time_to_target_s"] == expected
        mine = result.devices["width"] == variant.width
        own = [evaluate(variant.model, variant.space, flat[variant.index],
                        data.x[data.device_slice(d)], data.y[data.device_slice(d)])[0]
               for d in np.flatnonzero(mine)]
        assert result.devices.loc[mine, "accuracy"].tolist() == pytest.approx(own)
        samples = result.devices.loc[mine, "samples"]
        assert tier["local_accuracy"] == pytest.approx((np.array(own) * samples).sum()
                                                       / samples.sum())
    per_profile = {row["profile"]: row["width"] for row in result.summary["per_profile"]}
    assert per_profile == {"mcu": 0.25, "mobile": 1.0}


def test_single_full_variant_is_plain_fedavg(make_scenario):
    """variants = [1]: the same events as a run without variants, and the same model."""
    results = [
        hierfl.run(make_scenario(run={"cloud_rounds": 2, "learning": True}, model=model))
        for model in ({"name": "compact"}, {"name": "compact", "variants": [1]})
    ]
    plain, family = results
    assert plain.events.equals(family.events)
    for name, tensor in plain.model.items():
        torch.testing.assert_close(family.model[name], tensor, rtol=0, atol=1e-6)


FAMILY = textwrap.dedent(
    """
    import math
    from torch import nn

    class Scalable(nn.Module):
        def __init__(self, input_dim, num_classes, width=1.0):
            super().__init__()
            hidden = math.ceil(40 * width)
            self.body = nn.Linear(input_dim, hidden)
            self.head = nn.Linear(hidden, num_classes)

        def forward(self, x):
            return self.head(self.body(x).relu())

    class Fixed(nn.Module):
        def __init__(self, input_dim, num_classes):
            super().__init__()
            self.head = nn.Linear(input_dim, num_classes)

        def forward(self, x):
            return self.head(x)
    """
)


@pytest.fixture
def family_module(tmp_path, monkeypatch):
    """An importable module ``hierfl_family_models`` with a custom family and a plain class."""
    (tmp_path / "hierfl_family_models.py").write_text(FAMILY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "hierfl_family_models", raising=False)
    return "hierfl_family_models"


def test_custom_family_declared_by_width(family_module):
    """A custom class that accepts ``width`` is a family: its variants slice the full model."""
    family = build_family(f"{family_module}:Scalable", (6,), 3, 0, [1, 0.5])
    assert [v.stats.n_params for v in family.variants] == [6 * 20 + 20 + 20 * 3 + 3,
                                                            6 * 40 + 40 + 40 * 3 + 3]


def test_custom_class_without_width_has_no_family(family_module):
    """A custom class without a ``width`` keyword cannot give a narrower variant."""
    with pytest.raises(ScenarioError, match=r"model\.variants: .*Fixed.*no 'width' keyword"):
        build_family(f"{family_module}:Fixed", (6,), 3, 0, [1, 0.5])


def test_resume_of_a_family_run_equals_uninterrupted(tmp_path):
    """A HeteroFL run stopped after a cloud round and resumed gives the same tables and model
    (the family and each device's variant are rebuilt from the scenario)."""
    from test_resume import assert_same, interrupt_after

    from hierfl.sim.runner import resume, simulate

    scenario = hierfl.load_scenario(
        Path(__file__).parents[1] / "scenarios" / "heterofl.toml", ["run.cloud_rounds=3"]
    )
    whole = simulate(scenario)

    interrupt_after(scenario, tmp_path, 1)
    again = resume(tmp_path)
    assert_same(whole, again)
    assert again.summary["tiers"] == whole.summary["tiers"]


def test_dscnn_family_trains_batched_like_the_reference():
    """The DS-CNN's width-1/2 variant (8 and 16 channels, depthwise groups 8) trains through
    the batched trainer's generic path from its slice, equal to the plain reference loop."""
    family = build_family("dscnn", (1, 8, 8), 10, 0, [1, 0.5])
    counts = np.array([12, 9])
    config = DataConfig(kind="digits", samples_per_device=(9, 12))
    data = make_data(config, counts, np.random.default_rng(2))
    variant_of = np.array([0, 1])
    trainer = FamilyTrainer(family, variant_of, data, 1, 4, 0.1)
    assert [t.path for t in trainer.trainers] == ["generic", "generic"]
    start = family.full.space.vector(family.full.model)
    jobs = [trainer.submit(d, start, (3, d)) for d in range(2)]
    for device, job in enumerate(jobs):
        variant = family.variants[variant_of[device]]
        reference = ReferenceTrainer(variant.model, data, 1, 4, 0.1)
        expected = reference.train(reference.submit(device, start[variant.index], (3, device)))
        torch.testing.assert_close(job.result(), expected, rtol=1e-4, atol=1e-5)
