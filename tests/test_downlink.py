"""Downlink compression: models sent down travel as int8 bytes and are trained from decoded."""

from __future__ import annotations

import numpy as np
import torch

import hierfl
from hierfl.compression import Codec
from hierfl.sim.engine import Simulation, prepare

COMPACT_INT8 = 4522 + 6 * 8  # one byte per parameter, scale and offset for each of 6 tensors


def test_int8_downlink_bytes(make_scenario):
    """With downlink = int8, every device download and every cloud-to-edge download carries
    the int8 model (4,570 bytes for the compact MLP, against 18,088 dense); uploads keep the
    uplink codec's size."""
    dense = hierfl.run(make_scenario())
    int8 = hierfl.run(make_scenario(compression={"downlink": "int8"}))
    assert dense.summary["model"]["downlink_payload_bytes"] == 4 * 4522
    assert int8.summary["model"]["downlink_payload_bytes"] == COMPACT_INT8
    events = int8.events
    for kind in ("download", "cloud_download"):
        sent = events.loc[events["kind"] == kind, "bytes"]
        assert len(sent) and (sent == COMPACT_INT8).all(), kind
    uploads = events.loc[events["kind"] == "upload", "bytes"]
    assert (uploads == 4 * 4522).all()


def test_int8_downlink_shortens_downloads(make_scenario):
    """A smaller downlink payload makes each device's download shorter on the same link."""
    def download_s(result: hierfl.Result) -> np.ndarray:
        rows = result.events[result.events["kind"] == "download"]
        return (rows["t_end"] - rows["t_start"]).to_numpy()

    dense = download_s(hierfl.run(make_scenario()))
    int8 = download_s(hierfl.run(make_scenario(compression={"downlink": "int8"})))
    assert (int8 < dense).all()


def test_devices_train_from_the_decoded_model(make_scenario, monkeypatch):
    """Each device starts training from the model it decodes from the int8 downlink bytes,
    sends its delta against that model, and the aggregator applies the deltas to its own
    (exact) model."""
    scenario = make_scenario(
        run={"learning": True, "cloud_rounds": 1},
        topology={"mode": "cloud_only", "edges": 1},
        compression={"downlink": "int8"},
    )
    initial = prepare(scenario).global_weights
    space = prepare(scenario).space
    int8 = Codec("int8")
    decoded = torch.from_numpy(int8.decode_rows(int8.encode_rows(initial[None].numpy(),
                                                                 space.specs), space.specs)[0])
    assert not torch.equal(decoded, initial)
    starts, bases, aggregated = [], [], []
    submit, encode, aggregate = Simulation.submit, Simulation.encode, Simulation.aggregate

    def record_submit(self, device, start, *rounds):
        starts.append(start.clone())
        return submit(self, device, start, *rounds)

    def record_encode(self, models, base, senders):
        bases.append(base.clone())
        return encode(self, models, base, senders)

    def record_aggregate(self, node, base, updates):
        aggregated.append(base.clone())
        return aggregate(self, node, base, updates)

    monkeypatch.setattr(Simulation, "submit", record_submit)
    monkeypatch.setattr(Simulation, "encode", record_encode)
    monkeypatch.setattr(Simulation, "aggregate", record_aggregate)
    hierfl.run(scenario)
    assert len(starts) == 2 and all(torch.equal(start, decoded) for start in starts)
    assert bases and all(torch.equal(base, decoded) for base in bases)
    assert len(aggregated) == 1 and torch.equal(aggregated[0], initial)


def test_dense_downlink_sends_the_model_itself(make_scenario):
    """Without downlink compression, the model sent down is the model itself."""
    sim = prepare(make_scenario(run={"learning": True}))
    assert sim.send_down(sim.global_weights) is sim.global_weights
    assert sim.downlink_bytes == 4 * sim.space.size
