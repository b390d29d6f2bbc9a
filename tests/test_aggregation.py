"""FedAvg weighted by samples, at the edge and the cloud; two-tier equals flat when it should."""

from __future__ import annotations

import pytest
import torch

from hierfl.aggregation import apply_deltas, fedavg
from hierfl.learn.trainer import Job, ReferenceTrainer
from hierfl.scenario import Scenario
from hierfl.sim.cloud import cloud
from hierfl.sim.engine import STREAM_TRAINING, Simulation, prepare


def test_fedavg_weights_by_samples():
    """fedavg is the sample-weighted mean: (10 * 1 + 30 * 2 + 60 * 3) / 100 = 2.5."""
    vectors = [torch.tensor([1.0, 0.0]), torch.tensor([2.0, 10.0]), torch.tensor([3.0, -5.0])]
    # second coordinate: (10 * 0 + 30 * 10 + 60 * -5) / 100 = 0
    assert fedavg(vectors, [10, 30, 60]).tolist() == pytest.approx([2.5, 0.0])
    assert fedavg([torch.tensor([0.0, 2.0]), torch.tensor([4.0, 6.0])], [1, 3]).tolist() == [3, 5]


def test_fedavg_single_update_is_identity():
    """One update averages to itself, whatever its weight."""
    vector = torch.tensor([0.125, -3.5, 7.0])
    assert torch.equal(fedavg([vector], [17]), vector)
    assert fedavg([vector], [17]).dtype == torch.float32


def test_fedavg_rejects_bad_weights():
    """fedavg needs one positive-total weight per vector."""
    with pytest.raises(ValueError, match="as many weights"):
        fedavg([torch.zeros(2)], [1, 2])
    with pytest.raises(ValueError, match="as many weights"):
        fedavg([], [])
    with pytest.raises(ValueError, match="> 0"):
        fedavg([torch.zeros(2), torch.ones(2)], [0, 0])


def test_apply_deltas():
    """Deltas from one base: base + weighted mean delta, the same as averaging the models."""
    base = torch.tensor([1.0, 1.0])
    deltas = [torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 4.0])]
    # base + (1 * [2, 0] + 3 * [-2, 4]) / 4 = [1, 1] + [-1, 3] = [0, 4]
    assert apply_deltas(base, deltas, [1, 3]).tolist() == [0.0, 4.0]
    models = [base + d for d in deltas]
    assert torch.allclose(apply_deltas(base, deltas, [1, 3]), fedavg(models, [1, 3]))


def scenario_for(make_scenario, mode: str, edges: int, edge_rounds: int = 1,
                 payload: str = "delta") -> Scenario:
    """Learning on, full participation, uncompressed, uneven sample counts, ample batteries."""
    return make_scenario(
        run={"cloud_rounds": 2, "edge_rounds": edge_rounds, "learning": True,
             "learning_rate": 0.05, "batch_size": 4},
        data={"samples_per_device": [10, 60], "test_samples": 200},
        compression={"quantize": "none", "prune_ratio": 0.0, "payload": payload},
        selection={"policy": "all", "fraction": 1.0, "min_battery": 0.0},
        topology={"mode": mode, "edges": edges},
        devices=[{"profile": "mobile", "count": 3}, {"profile": "soc", "count": 2}],
    )


def simulated(scenario: Scenario) -> Simulation:
    sim = prepare(scenario)
    sim.env.process(cloud(sim))
    sim.env.run()
    return sim


def hand_hierfavg(scenario: Scenario) -> torch.Tensor:
    """HierFAVG by hand with ReferenceTrainer: edges average their devices every edge round,
    the cloud averages the edges weighted by the samples behind them."""
    sim = prepare(scenario)  # only for the initial model, the data and the edge assignment
    run = scenario.run
    trainer = ReferenceTrainer(sim.model, sim.data, run.local_epochs, run.batch_size,
                               run.learning_rate)
    samples = sim.fleet.samples
    groups = [[d for d, e in enumerate(sim.topo.edge_of) if e == edge]
              for edge in range(max(1, len(sim.topo.edges)))]
    if scenario.topology.mode == "cloud_only":
        groups = [list(range(len(sim.topo.devices)))]
    model = sim.global_weights.clone()
    for cloud_round in range(run.cloud_rounds):
        edge_models, edge_samples = [], []
        for devices in groups:
            edge_model = model
            for edge_round in range(run.edge_rounds):
                trained = [
                    trainer.train(Job(trainer, d, edge_model,
                                      (scenario.seed, STREAM_TRAINING, d, cloud_round, edge_round)))
                    for d in devices
                ]
                edge_model = fedavg(trained, [int(samples[d]) for d in devices])
            edge_models.append(edge_model)
            edge_samples.append(sum(int(samples[d]) for d in devices))
        model = fedavg(edge_models, edge_samples)
    return model


@pytest.mark.parametrize("payload", ["delta", "weights"])
def test_two_tier_with_one_edge_round_equals_flat_fedavg(make_scenario, payload):
    """HierFAVG with edge_rounds = 1, everyone selected and no compression is flat FedAvg.

    Two edges aggregating then the cloud weighting them by their samples equals the cloud
    averaging all device updates at once (cloud_only), and a hand loop of FedAvg over
    ReferenceTrainer from the same start.
    """
    hierarchical = simulated(scenario_for(make_scenario, "hierarchical", 2, payload=payload))
    flat = simulated(scenario_for(make_scenario, "cloud_only", 2, payload=payload))
    assert not torch.equal(hierarchical.global_weights, prepare(
        scenario_for(make_scenario, "hierarchical", 2, payload=payload)).global_weights)
    assert hierarchical.trained.tolist() == [2] * 5 == flat.trained.tolist()
    torch.testing.assert_close(hierarchical.global_weights, flat.global_weights,
                               rtol=1e-5, atol=1e-6)
    hand = hand_hierfavg(scenario_for(make_scenario, "cloud_only", 2, payload=payload))
    torch.testing.assert_close(flat.global_weights, hand, rtol=1e-5, atol=1e-6)
    for h_row, f_row in zip(hierarchical.round_rows, flat.round_rows, strict=True):
        assert h_row["accuracy"] == pytest.approx(f_row["accuracy"], abs=1e-9)
        assert h_row["loss"] == pytest.approx(f_row["loss"], rel=1e-5)


@pytest.mark.parametrize(("edges", "edge_rounds"), [(1, 1), (1, 2), (2, 2), (3, 2)])
def test_hierfavg_matches_hand_loop(make_scenario, edges, edge_rounds):
    """The simulated global model equals HierFAVG computed by hand for several shapes."""
    scenario = scenario_for(make_scenario, "hierarchical", edges, edge_rounds)
    sim = simulated(scenario)
    torch.testing.assert_close(sim.global_weights, hand_hierfavg(scenario),
                               rtol=1e-5, atol=1e-6)


def test_edge_rounds_change_the_model(make_scenario):
    """Two edge rounds per cloud round are not one: the edges do more work between uploads."""
    one = simulated(scenario_for(make_scenario, "hierarchical", 2, 1))
    two = simulated(scenario_for(make_scenario, "hierarchical", 2, 2))
    assert not torch.allclose(one.global_weights, two.global_weights)
