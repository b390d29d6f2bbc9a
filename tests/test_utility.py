"""Oort's statistical utility: sqrt(|B| * sum of squared losses) of the received model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hierfl.learn.utility import statistical_utility
from hierfl.sim.engine import prepare


@pytest.mark.parametrize("variants", [None, [1, 0.5]])
def test_utility_is_the_rms_loss_times_the_sample_count(make_scenario, variants):
    """For each device, a plain torch cross-entropy over its own rows under the weights it
    received (its variant's slice with a model family) gives the same utility."""
    model = {"name": "compact"} if variants is None else {"name": "compact",
                                                          "variants": variants}
    devices = [{"profile": "soc", "count": 2}, {"profile": "mcu", "count": 2}]
    sim = prepare(make_scenario(run={"learning": True}, model=model, devices=devices))
    start = sim.global_weights
    got = statistical_utility(sim, np.arange(4), start)
    offsets = sim.trainer.data.offsets
    for d in range(4):
        rows = slice(offsets[d], offsets[d + 1])
        if sim.family is None:
            net, space, flat = sim.model, sim.space, start
        else:
            variant = sim.family.variants[int(sim.variant_of[d])]
            net, space, flat = variant.model, variant.space, start[variant.index]
        params = space.unflatten(flat)
        logits = torch.func.functional_call(net, params, (sim.trainer.x[rows],))
        loss = F.cross_entropy(logits, sim.trainer.y[rows], reduction="none").double()
        n = offsets[d + 1] - offsets[d]
        assert got[d] == pytest.approx(float(n * torch.sqrt((loss**2).mean())), rel=1e-6)
