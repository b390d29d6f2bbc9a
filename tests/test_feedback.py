"""Error feedback: each sender keeps what its codec lost and adds it to its next update."""

from __future__ import annotations

import torch

from hierfl.costs import train_bytes
from hierfl.limits import estimate_bytes
from hierfl.sim.engine import prepare


def feedback_sim(make_scenario, **compression):
    """A learning simulation of the small scenario with error feedback and these settings."""
    return prepare(make_scenario(
        run={"learning": True}, compression={"error_feedback": True, **compression}
    ))


def first_tensor(sim, values: list[float]) -> torch.Tensor:
    """A flat update that is ``values`` at the start of the first tensor, zero elsewhere."""
    update = torch.zeros(sim.space.size)
    update[: len(values)] = torch.tensor(values)
    return update


def test_residual_carries_what_top_k_left_out(make_scenario):
    """Top-1 per tensor, by hand: [3, 2] sends 3 and keeps 2; then [1, 0] + [0, 2] sends
    2 and keeps 1. What was sent plus the residual is the sum of the updates."""
    sim = feedback_sim(make_scenario, top_k=1e-4)  # k = ceil(n / 10^4) = 1 in every tensor
    base, node = torch.zeros(sim.space.size), 3
    first = sim.decode(sim.encode([first_tensor(sim, [3.0, 2.0])], base, [node]), sim.space)[0]
    assert torch.equal(first, first_tensor(sim, [3.0]))
    assert torch.equal(sim.residuals[node], first_tensor(sim, [0.0, 2.0]))
    second = sim.decode(sim.encode([first_tensor(sim, [1.0])], base, [node]), sim.space)[0]
    assert torch.equal(second, first_tensor(sim, [0.0, 2.0]))
    assert torch.equal(sim.residuals[node], first_tensor(sim, [1.0]))
    assert torch.equal(first + second + sim.residuals[node], first_tensor(sim, [4.0, 2.0]))


def test_sent_plus_residual_is_the_sum_of_updates(make_scenario):
    """Over five rounds of random updates (int8 of the top 10%), the sum of what each sender
    sent plus its residual equals the sum of its updates, to float32 rounding."""
    sim = feedback_sim(make_scenario, quantize="int8", top_k=0.1)
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(sim.space.size, generator=generator)
    nodes = [3, 4]
    total_updates, total_sent = torch.zeros(2, sim.space.size), torch.zeros(2, sim.space.size)
    for _ in range(5):
        updates = torch.randn(2, sim.space.size, generator=generator)
        total_updates += updates
        total_sent += sim.decode(sim.encode(list(base + updates), base, nodes), sim.space)
    residuals = torch.stack([sim.residuals[node] for node in nodes])
    torch.testing.assert_close(total_sent + residuals, total_updates, rtol=0, atol=1e-4)


def test_without_feedback_nothing_is_kept(make_scenario):
    """Without error feedback no sender keeps a residual; the update is encoded as it is."""
    sim = prepare(make_scenario(run={"learning": True}, compression={"top_k": 1e-4}))
    base = torch.zeros(sim.space.size)
    sent = sim.decode(sim.encode([first_tensor(sim, [3.0, 2.0])], base, [3]), sim.space)[0]
    assert torch.equal(sent, first_tensor(sim, [3.0]))
    assert sim.residuals == {}


def test_residual_counts_in_the_device_memory(make_scenario, weak_profile):
    """A device that fits weights, gradients and activations but not also the residual
    (one float32 per parameter) is left out with error feedback, kept without it."""
    n_params, batch, activations = 4522, 8, 266  # the compact MLP
    without = train_bytes(n_params, batch, activations)
    assert train_bytes(n_params, batch, activations, keeps_residual=True) == without + 4 * n_params
    tight = {**weak_profile, "memory_kb": 50}  # 51,200 bytes: 44,688 fit, 62,776 do not
    sections = {
        "profiles": {"tight": tight, "roomy": weak_profile},
        "devices": [{"profile": "tight", "count": 1}, {"profile": "roomy", "count": 1}],
    }
    assert prepare(make_scenario(**sections)).fleet.fits.tolist() == [True, True]
    with_feedback = prepare(make_scenario(compression={"error_feedback": True}, **sections))
    assert with_feedback.fleet.fits.tolist() == [False, True]


def test_residuals_count_in_this_machines_memory_estimate(make_scenario):
    """The run's memory estimate adds one float32 row per sender (devices and edges)."""
    plain = make_scenario(run={"learning": True})
    feedback = make_scenario(run={"learning": True}, compression={"error_feedback": True})
    assert estimate_bytes(feedback, 64, 4522) - estimate_bytes(plain, 64, 4522) == 4 * 3 * 4522
