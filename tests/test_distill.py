"""FedDF distillation (Lin et al. 2020): the cloud distils the ensemble into the global model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_batched import _data
from test_hetero import COMPACT
from test_resume import assert_same, interrupt_after
from torch import nn

from hierfl.learn.distill import (
    distill,
    distill_flops,
    ensemble_logits,
    kl_to_teacher,
    proxy_inputs,
)
from hierfl.learn.models import build_model
from hierfl.learn.trainer import ParamSpace
from hierfl.scenario import DistillationConfig
from hierfl.sim.cloud import cloud
from hierfl.sim.engine import prepare
from hierfl.sim.runner import resume, simulate


def members(count: int, seed: int) -> tuple[nn.Module, list[tuple[nn.Module, torch.Tensor]]]:
    """The compact MLP and ``count`` randomly perturbed copies of its weights."""
    model = build_model("compact", (32,), 10, seed=0)
    space, gen = ParamSpace.of(model), torch.Generator().manual_seed(seed)
    base = space.vector(model)
    return model, [(model, base + 0.3 * torch.randn(space.size, generator=gen))
                   for _ in range(count)]


def test_distillation_lowers_the_kl_to_the_ensemble():
    """After distilling, the student's KL to the ensemble's averaged logits on the proxy
    set is below what the averaged weights (its start) had."""
    model, ensemble = members(3, 1)
    x = torch.randn(128, 32, generator=torch.Generator().manual_seed(2))
    start = torch.stack([w for _, w in ensemble]).mean(dim=0)
    settings = DistillationConfig(enabled=True, steps=40, learning_rate=1e-2, temperature=2.0)
    teacher = ensemble_logits(ensemble, x)
    before = float(kl_to_teacher(model, start, x, teacher, 2.0))
    after_w = distill(model, start, ensemble, x, settings, np.random.default_rng(0))
    after = float(kl_to_teacher(model, after_w, x, teacher, 2.0))
    assert after < 0.5 * before


def test_ensemble_averages_logits_of_different_architectures():
    """Members may be different modules (HeteroFL tiers): the teacher is their mean logits."""
    wide, narrow = build_model("compact", (32,), 10, seed=0), build_model("tiny", (32,), 10, seed=1)
    pairs = [(m, ParamSpace.of(m).vector(m)) for m in (wide, narrow)]
    x = torch.randn(5, 32)
    with torch.no_grad():
        expected = (wide(x) + narrow(x)) / 2
    torch.testing.assert_close(ensemble_logits(pairs, x), expected)


def test_distill_flops_by_hand():
    """Teacher forwards once over the proxy set per member, then per step 3 forward passes
    of a minibatch and 13 Adam FLOPs per parameter: 1344 * 2 * 32 + 5 * (3 * 1344 * 8 +
    13 * 698) = 292,666."""
    settings = DistillationConfig(steps=5, batch_size=8)
    assert distill_flops(2 * 1344, 1344, 698, settings, 32) == 292_666
    assert distill_flops(1344, 1344, 698, DistillationConfig(steps=1, batch_size=64), 10) == (
        1344 * 10 + 3 * 1344 * 10 + 13 * 698  # a minibatch is at most the proxy set
    )


def test_proxy_is_a_seeded_draw_from_the_pool_or_noise():
    """pool: distinct rows of the devices' inputs (at most all); noise: normal inputs."""
    data = _data((32,), 10, counts=(5, 7))
    pool = proxy_inputs(data, DistillationConfig(proxy_samples=8), np.random.default_rng(0))
    assert pool.shape == (8, 32)
    rows = [int(torch.nonzero((data.x == row).all(dim=1))[0]) for row in pool]
    assert len(set(rows)) == 8
    everything = proxy_inputs(data, DistillationConfig(proxy_samples=99), np.random.default_rng(0))
    assert everything.shape == (12, 32)
    noise = proxy_inputs(data, DistillationConfig(proxy="noise", proxy_samples=6),
                         np.random.default_rng(0))
    assert noise.shape == (6, 32) and noise.dtype == torch.float32


def scenario(make_scenario, mode="hierarchical", **distillation):
    """2 edges, 4 mcu devices with 16 samples, the tiny MLP, 3 cloud rounds, FedDF."""
    table = {"enabled": True, "proxy_samples": 32, "steps": 5, "batch_size": 8, **distillation}
    return make_scenario(
        run={"learning": True, "cloud_rounds": 3, "local_epochs": 1},
        data={"samples_per_device": 16, "test_samples": 50},
        model={"name": "tiny"},
        topology={"mode": mode, "edges": 2},
        devices=[{"profile": "mcu", "count": 4}],
        distillation=table,
    )


@pytest.mark.parametrize(("mode", "members"), [("hierarchical", 2), ("cloud_only", 4)])
def test_distill_event_timing_from_flops(make_scenario, mode, members):
    """Each cloud round has one ``distill`` on the cloud right after its aggregation, lasting
    distill_flops / (cloud compute_mflops 1e6) with power_compute_w times that in joules;
    the ensemble is the edges (hierarchical) or the devices (cloud_only)."""
    sc = scenario(make_scenario, mode)
    result = simulate(sc)
    events = result.events
    distills = events[events["kind"] == "distill"].reset_index(drop=True)
    aggregations = events[events["kind"] == "cloud_aggregate"].reset_index(drop=True)
    assert len(distills) == 3 and (distills["node"] == "cloud").all()
    np.testing.assert_array_equal(distills["t_start"], aggregations["t_end"])
    cloud = sc.profile("edge_server")
    flops = 1344 * members * 32 + 5 * (3 * 1344 * 8 + 13 * 698)  # tiny: 1344 FLOPs, 698 params
    seconds = flops / (cloud.compute_mflops * 1e6)
    # differences of absolute times of a few seconds: ~1e-16 s of rounding on 2e-7 s
    np.testing.assert_allclose(distills["t_end"] - distills["t_start"], seconds, rtol=1e-8)
    np.testing.assert_allclose(distills["energy_j"], cloud.power_compute_w * seconds, rtol=1e-12)


def test_distillation_changes_the_global_model_reproducibly(make_scenario):
    """Distilling moves the global model; the same scenario and seed give the same model."""
    with_kd, again = simulate(scenario(make_scenario)), simulate(scenario(make_scenario))
    without = simulate(scenario(make_scenario, enabled=False))
    assert not torch.equal(with_kd.model["net.1.weight"], without.model["net.1.weight"])
    assert_same(with_kd, again)


def test_timing_only_distillation_records_the_same_events(make_scenario):
    """A timing-only run has the same distill events as the learning run."""
    learned = simulate(scenario(make_scenario))
    timed = simulate(scenario(make_scenario).with_overrides(["run.learning=false"]))
    pick = ["t_start", "t_end", "energy_j"]
    a, b = (r.events[r.events["kind"] == "distill"][pick].reset_index(drop=True)
            for r in (learned, timed))
    assert a.equals(b)


def test_resumed_distillation_equals_uninterrupted(tmp_path, make_scenario):
    """The proxy set and the distillation order come from the seed: resuming changes nothing."""
    sc = scenario(make_scenario, proxy="noise")
    whole = simulate(sc)

    interrupt_after(sc, tmp_path, 1)
    assert_same(whole, resume(tmp_path))


def test_cloud_only_tiers_are_the_ensemble(make_scenario):
    """With a model family in cloud_only, each device's update joins the ensemble as its own
    width variant (decoded slice, run by the variant's network), and the teacher's FLOPs
    are the variants' forward FLOPs summed: 0.25-wide mcu + full-width mobile."""
    scenario = make_scenario(
        run={"learning": True, "cloud_rounds": 1},
        data={"test_samples": 50},
        model={"name": "compact", "variants": [1, 0.5, 0.25]},
        topology={"mode": "cloud_only", "edges": 1},
        devices=[{"profile": "mcu", "count": 1}, {"profile": "mobile", "count": 1}],
        profiles={"mcu": {"memory_kb": 10}},
        distillation={"enabled": True, "proxy_samples": 16, "steps": 3, "batch_size": 8},
    )
    sim = prepare(scenario)
    seen = []
    members = sim.members

    def spy(base, updates):
        found = members(base, updates)
        seen.append(found)
        return found

    sim.members = spy
    sim.env.process(cloud(sim))
    sim.env.run()
    (found,) = seen
    width = {v.width: v for v in sim.family.variants}
    narrow, full = width[0.25], width[1.0]
    assert [m for m, _ in found] == [narrow.model, full.model]
    assert [w.numel() for _, w in found] == [narrow.space.size, full.space.size]
    events = sim.trace.to_frame()
    (row,) = events[events["kind"] == "distill"].itertuples()
    teacher = COMPACT[0.25][1] + COMPACT[1.0][1]
    flops = teacher * 16 + 3 * (3 * COMPACT[1.0][1] * 8 + 13 * COMPACT[1.0][0])
    mflops = scenario.profile("edge_server").compute_mflops
    assert row.t_end - row.t_start == pytest.approx(flops / (mflops * 1e6), rel=1e-8)
