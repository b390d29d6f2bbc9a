"""Server optimisers (Reddi et al. 2021): FedAvg, FedAvgM, FedAdam and plug-ins, per aggregator."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch
from test_resume import assert_same, interrupt_after

import hierfl
from hierfl.errors import HierflError, ScenarioError
from hierfl.optimizers import FedAdam, FedAvgM, ServerOptimizer, resolve_optimizer
from hierfl.plugins import custom_references
from hierfl.scenario import AggregationConfig
from hierfl.sim.cloud import cloud
from hierfl.sim.engine import prepare
from hierfl.sim.runner import resume, simulate


def steps(seed: int, size: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` random (averaged - model) deltas and the starting model."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(size, generator=gen) for _ in range(count + 1)]


def test_fedavg_server_lr_is_a_step_along_the_average():
    """FedAvg: model + server_lr * (averaged - model); server_lr = 1 returns the average itself."""
    model, averaged = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5])
    assert ServerOptimizer(AggregationConfig(), 2).step(model, averaged) is averaged
    half = ServerOptimizer(AggregationConfig(server_lr=0.5), 2).step(model, averaged)
    assert half.tolist() == [2.0, -0.75]


def test_fedavgm_matches_torch_sgd_momentum_on_the_pseudo_gradient():
    """FedAvgM equals torch.optim.SGD(momentum) fed the pseudo-gradient -(averaged - model)."""
    settings = AggregationConfig(server_lr=0.7, server_momentum=0.8)
    start, *targets = steps(0, 5, 6)
    opt = FedAvgM(settings, 5)
    param = torch.nn.Parameter(start.clone())
    sgd = torch.optim.SGD([param], lr=0.7, momentum=0.8)
    model = start.clone()
    for target in targets:
        model = opt.step(model, target)
        param.grad = -(target - param.detach())
        sgd.step()
        torch.testing.assert_close(model, param.detach(), rtol=1e-6, atol=1e-6)


def test_fedadam_matches_reddi_algorithm_2_by_hand():
    """FedAdam equals Reddi et al.'s update written element by element in plain Python:
    v starts at tau**2, no bias correction."""
    settings = AggregationConfig(server_lr=0.1, beta1=0.9, beta2=0.99, tau=0.01)
    start, *targets = steps(1, 4, 5)
    opt = FedAdam(settings, 4)
    model = start.clone()
    x = start.tolist()
    m, v = [0.0] * 4, [0.01**2] * 4
    for target in targets:
        model = opt.step(model, target)
        for i, t in enumerate(target.tolist()):
            delta = t - x[i]
            m[i] = 0.9 * m[i] + 0.1 * delta
            v[i] = 0.99 * v[i] + 0.01 * delta * delta
            x[i] = x[i] + 0.1 * m[i] / (math.sqrt(v[i]) + 0.01)
        torch.testing.assert_close(model, torch.tensor(x), rtol=1e-5, atol=1e-6)


def learning(make_scenario, **sections):
    """A small learning scenario: 2 edges, 4 mcu devices, 3 cloud rounds, 2 edge rounds."""
    return make_scenario(
        run={"learning": True, "cloud_rounds": 3, "edge_rounds": 2, "local_epochs": 1},
        data={"samples_per_device": 16, "test_samples": 50},
        model={"name": "tiny"},
        topology={"mode": "hierarchical", "edges": 2},
        devices=[{"profile": "mcu", "count": 4}],
        **sections,
    )


def play(scenario):
    """Run ``scenario`` in process, recording each aggregation's (node, base, average, result)."""
    sim = prepare(scenario)
    calls = []
    aggregate = sim.aggregate

    def spy(node, base, updates):
        result = aggregate(node, base, updates)
        calls.append((node, base.clone(), sim.average(base, updates), result.clone()))
        return result

    sim.aggregate = spy
    sim.env.process(cloud(sim))
    sim.env.run()
    return sim, calls


def test_fedavg_with_server_lr_1_is_plain_fedavg(make_scenario):
    """The default optimiser changes nothing: every aggregation returns exactly the average,
    and the run is identical to one whose aggregators only average."""
    sim, calls = play(learning(make_scenario))
    assert calls and all(torch.equal(avg, result) for _, _, avg, result in calls)
    plain = prepare(learning(make_scenario))
    plain.aggregate = lambda node, base, updates: plain.average(base, updates)
    plain.env.process(cloud(plain))
    plain.env.run()
    assert torch.equal(sim.global_weights, plain.global_weights)
    assert sim.trace.to_frame().equals(plain.trace.to_frame())


def test_each_aggregator_keeps_its_own_optimiser_state(make_scenario):
    """With fedavgm at the edges and fedadam at the cloud, replaying every aggregation's
    (base, average) through a fresh hand reference per node gives each result."""
    scenario = learning(
        make_scenario,
        aggregation={"edge_optimizer": "fedavgm", "cloud_optimizer": "fedadam",
                     "server_lr": 0.5, "server_momentum": 0.5},
    )
    _, calls = play(scenario)
    assert {node for node, *_ in calls} == {0, 1, 2}
    settings = scenario.aggregation
    replay = {0: FedAdam(settings, calls[0][1].numel())}
    replay |= {node: FedAvgM(settings, calls[0][1].numel()) for node in (1, 2)}
    for node, base, average, result in calls:
        assert torch.equal(replay[node].step(base, average), result)


def test_aggregation_time_counts_the_optimiser_step(make_scenario):
    """An aggregation takes (2 P n + flops_per_param P) / (compute_mflops 1e6) seconds:
    fedadam adds 13 FLOPs per parameter."""
    scenario = learning(make_scenario, aggregation={"cloud_optimizer": "fedadam"})
    sim = prepare(scenario)
    sim.env.process(cloud(sim))
    sim.env.run()
    events = sim.trace.to_frame()
    params, mflops = sim.space.size, scenario.profile("edge_server").compute_mflops
    cloud_agg = events[events["kind"] == "cloud_aggregate"]
    assert len(cloud_agg) == 3
    expected_s = (2 * params * 2 + 13 * params) / (mflops * 1e6)  # 2 edges' updates
    assert np.allclose(cloud_agg["t_end"] - cloud_agg["t_start"], expected_s, rtol=1e-12)
    edge_agg = events[events["kind"] == "edge_aggregate"]
    assert np.allclose(edge_agg["t_end"] - edge_agg["t_start"], 2 * params * 2 / (mflops * 1e6))


@pytest.mark.parametrize("mode", ["hierarchical", "cloud_only"])
def test_resumed_run_with_optimiser_state_equals_uninterrupted(tmp_path, make_scenario, mode):
    """Momentum and moments survive a checkpoint: resuming after round 1 equals the whole run."""
    optimizers = {"cloud_optimizer": "fedadam", "server_lr": 0.3}
    if mode == "hierarchical":
        optimizers["edge_optimizer"] = "fedavgm"
    scenario = learning(make_scenario, aggregation=optimizers)
    if mode == "cloud_only":
        scenario = scenario.with_overrides(["topology.mode=cloud_only", "run.edge_rounds=1"])
    whole = simulate(scenario)

    interrupt_after(scenario, tmp_path, 1)
    assert_same(whole, resume(tmp_path))


def test_unknown_optimiser_is_one_clear_error(make_scenario):
    """An unknown optimiser name is refused naming the key, the value and what is allowed."""
    with pytest.raises(ScenarioError, match=r"aggregation.cloud_optimizer.*'adam'.*fedadam"):
        make_scenario(aggregation={"cloud_optimizer": "adam"})


def test_cloud_only_refuses_an_edge_optimiser(make_scenario):
    """cloud_only has no edge aggregation: an edge optimiser other than fedavg is an error."""
    with pytest.raises(ScenarioError, match="aggregation.edge_optimizer.*cloud_only"):
        make_scenario(topology={"mode": "cloud_only", "edges": 1},
                      aggregation={"edge_optimizer": "fedavgm"})


@pytest.fixture
def user_optimizers(tmp_path, monkeypatch):
    """A module ``useropt`` with a plug-in optimiser (sign SGD) and a plain function."""
    (tmp_path / "useropt.py").write_text(textwrap.dedent("""
        import torch

        class SignStep:
            def __init__(self, settings, size):
                self.lr, self.flops_per_param = settings.server_lr, 2
                self.steps = torch.zeros(1)

            def step(self, model, averaged):
                self.steps += 1
                return model + self.lr * torch.sign(averaged - model)

            def state_dict(self):
                return {"steps": self.steps}

            def load_state_dict(self, state):
                self.steps.copy_(state["steps"])

        class Empty:
            def __init__(self, settings, size):
                pass
    """))
    (tmp_path / "useropt_fn.py").write_text("def not_a_class(settings, size):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_plugin_optimiser_takes_its_step(user_optimizers, make_scenario):
    """A ``package.module:Name`` optimiser is built per aggregator and its step is used."""
    scenario = learning(
        make_scenario, aggregation={"cloud_optimizer": "useropt:SignStep", "server_lr": 0.01}
    )
    assert custom_references(scenario) == {"aggregation.cloud_optimizer": "useropt:SignStep"}
    sim, calls = play(scenario)
    for node, base, average, result in calls:
        if node == 0:
            assert torch.equal(result, base + 0.01 * torch.sign(average - base))
    assert sim.optimizers[0].steps.item() == 3


def test_plugin_that_is_not_an_optimiser_is_refused(user_optimizers):
    """A class without the optimiser methods, or a function, is refused naming the key."""
    with pytest.raises(ScenarioError, match="aggregation.edge_optimizer.*has no step"):
        resolve_optimizer("useropt:Empty", "aggregation.edge_optimizer", AggregationConfig(), 3)
    with pytest.raises(ScenarioError, match="cloud_optimizer.*is a function, not a server-opt"):
        resolve_optimizer("useropt_fn:not_a_class", "aggregation.cloud_optimizer",
                          AggregationConfig(), 3)


def test_resume_of_a_foreign_checkpoint_naming_an_optimiser_needs_allow_code(
    tmp_path, user_optimizers, make_scenario, monkeypatch
):
    """A checkpoint naming an optimiser plug-in that another user's hierfl wrote resumes
    only with allow_code."""
    scenario = learning(make_scenario, aggregation={"cloud_optimizer": "useropt:SignStep"})
    simulate(scenario.with_overrides(["run.cloud_rounds=1"]), checkpoint_dir=tmp_path)
    monkeypatch.setenv("HIERFL_CACHE_DIR", str(tmp_path / "other-user"))
    with pytest.raises(HierflError, match="aggregation.cloud_optimizer='useropt:SignStep'"):
        hierfl.checkpoint.load_checkpoint(tmp_path)
    assert hierfl.checkpoint.load_checkpoint(tmp_path, allow_code=True)["next_round"] == 1
