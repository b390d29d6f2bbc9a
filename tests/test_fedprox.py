"""FedProx (Li et al. 2020): local SGD on the loss plus (mu/2)||w - w_received||^2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_batched import BATCH, EPOCHS, LR, _data
from test_hetero import COMPACT, _mixed

import hierfl
from hierfl.costs import prox_flops, train_flops
from hierfl.learn.batched import BatchedTrainer
from hierfl.learn.models import build_model
from hierfl.learn.trainer import ParamSpace, ReferenceTrainer, epoch_orders
from hierfl.sim.cloud import cloud
from hierfl.sim.engine import prepare


def plain_fedprox(model, start, x, y, seed, mu):
    """A plain torch loop: torch.optim.SGD on cross-entropy + (mu/2) sum ||p - p_start||^2."""
    space = ParamSpace.of(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(space.unflatten(start)[name])
    anchors = [p.detach().clone() for p in model.parameters()]
    sgd = torch.optim.SGD(model.parameters(), lr=LR)
    for order in epoch_orders(seed, len(y), EPOCHS):
        for begin in range(0, len(order), BATCH):
            batch = torch.as_tensor(order[begin : begin + BATCH])
            sgd.zero_grad()
            loss = F.cross_entropy(model(x[batch]), y[batch])
            pairs = zip(model.parameters(), anchors, strict=True)
            prox = sum(((p - a) ** 2).sum() for p, a in pairs)
            (loss + mu / 2 * prox).backward()
            sgd.step()
    return space.vector(model)


@pytest.mark.parametrize("name", ["compact", "dscnn"])
def test_trainers_match_a_plain_torch_fedprox_loop(name):
    """Reference and batched trainers with mu give what a plain torch FedProx loop gives."""
    shape = (1, 8, 8) if name == "dscnn" else (32,)
    model, data = build_model(name, shape, 10, seed=0), _data(shape, 10, counts=(9, 23))
    space = ParamSpace.of(model)
    start = space.vector(model) + 0.05 * torch.randn(space.size, generator=torch.Generator())
    ref = ReferenceTrainer(model, data, EPOCHS, BATCH, LR, mu=0.3)
    bat = BatchedTrainer(model, data, EPOCHS, BATCH, LR, mu=0.3)
    for device in range(2):
        rows = data.device_slice(device)
        want = plain_fedprox(model, start, data.x[rows], data.y[rows], (5, device), 0.3)
        for trainer in (ref, bat):
            got = trainer.submit(device, start, (5, device)).result()
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_proximal_term_pulls_towards_the_start():
    """A larger mu ends closer to the start weights (the term's whole point)."""
    model, data = build_model("compact", (32,), 10, seed=0), _data((32,), 10, counts=(50,))
    start = ParamSpace.of(model).vector(model)
    moved = [
        float((ReferenceTrainer(model, data, EPOCHS, BATCH, LR, mu=mu)
               .submit(0, start, (1,)).result() - start).norm())
        for mu in (0.0, 1.0, 5.0)
    ]
    assert moved[0] > moved[1] > moved[2] > 0


def test_prox_flops_by_hand():
    """3 FLOPs per parameter per minibatch step: 1000 params, 20 samples, batch 8, 2 epochs
    = 3 * 1000 * 2 * 3 = 18,000."""
    assert prox_flops(1000, 20, 2, 8) == 18_000
    assert prox_flops(1000, 16, 1, 8) == 6_000


def test_compute_time_counts_the_proximal_term(make_scenario):
    """With mu > 0 a device computes for (train_flops + prox_flops) / (compute_mflops 1e6)."""
    scenario = make_scenario(aggregation={"mu": 0.01})
    sim = prepare(scenario)
    sim.env.process(cloud(sim))
    sim.env.run()
    events = sim.trace.to_frame()
    compute = events[events["kind"] == "compute"]
    n_params, fwd = sim.stats.n_params, sim.stats.forward_flops
    flops = train_flops(fwd, 40, 2) + 3 * n_params * 2 * 5  # 40 samples, batch 8: 5 steps
    mflops = scenario.profile("mcu").compute_mflops
    assert np.allclose(compute["t_end"] - compute["t_start"], flops / (mflops * 1e6), rtol=1e-12)


def test_proximal_flops_count_each_devices_variant(make_scenario):
    """With a model family, the proximal term costs 3 FLOPs per parameter of the device's own
    variant per step: 40 samples, batch 8, 2 epochs = 10 steps."""
    scenario = _mixed(make_scenario, **{}).with_overrides(["aggregation.mu=0.1"])
    events = hierfl.run(scenario).events
    events = events.assign(kind=events["kind"].astype(str), node=events["node"].astype(str))
    for device, width, mflops in (("mcu-0", 0.25, 100), ("mobile-1", 1.0, 50_000)):
        compute = events[(events["node"] == device) & (events["kind"] == "compute")].iloc[0]
        params, flops, _ = COMPACT[width]
        expected = (3 * flops * 40 * 2 + 3 * params * 10) / (mflops * 1e6)
        assert compute["t_end"] - compute["t_start"] == pytest.approx(expected, rel=1e-9)
