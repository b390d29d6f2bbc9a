"""Batched training: every path gives the reference trainer's results, whatever the job mix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hierfl.learn.batched import BatchedTrainer, make_trainer, needs_reference
from hierfl.learn.data import FederatedData
from hierfl.learn.models import build_model
from hierfl.learn.trainer import ParamSpace, ReferenceTrainer

COUNTS = (1, 7, 8, 9, 23, 50)
BATCH, EPOCHS, LR = 8, 2, 0.1
ATOL = 1e-5


class Residual(nn.Module):
    """Not a chain: a skip connection and tensor methods send it down the generic path."""

    def __init__(self, input_dim: int = 12, num_classes: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(input_dim, 16)
        self.mid = nn.Linear(16, 16)
        self.out = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x.flatten(1)))
        return self.out(h + F.relu(self.mid(h)))


class Branchy(nn.Module):
    """Data-dependent control flow: vmap refuses it."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(x)
        return out if bool(out.sum() > 0) else -out


def _chain() -> nn.Module:
    """Every supported activation, stacked ones, a bias-free layer and an Identity."""
    return nn.Sequential(
        nn.Linear(12, 16), nn.Tanh(), nn.ReLU(), nn.Linear(16, 16, bias=False), nn.GELU(),
        nn.Linear(16, 16), nn.Sigmoid(), nn.Identity(), nn.Tanh(), nn.Linear(16, 16),
        nn.LeakyReLU(0.1), nn.Linear(16, 16), nn.SiLU(), nn.Sigmoid(), nn.Linear(16, 16),
        nn.GELU("tanh"), nn.Linear(16, 4),
    )


def _data(input_shape: tuple[int, ...], num_classes: int, counts=COUNTS, seed=0) -> FederatedData:
    gen = torch.Generator().manual_seed(seed)
    total = sum(counts)
    return FederatedData(
        x=torch.randn(total, *input_shape, generator=gen),
        y=torch.randint(0, num_classes, (total,), generator=gen),
        offsets=np.concatenate(([0], np.cumsum(counts))).astype(np.int64),
        x_test=torch.zeros(0, *input_shape),
        y_test=torch.zeros(0, dtype=torch.int64),
        input_shape=input_shape,
        num_classes=num_classes,
    )


def _case(name: str) -> tuple[nn.Module, FederatedData]:
    torch.manual_seed(0)
    if name == "dscnn":
        return build_model("dscnn", (1, 8, 8), 10, seed=0), _data((1, 8, 8), 10)
    if name == "residual":
        return Residual(), _data((12,), 4)
    if name == "chain":
        return _chain(), _data((12,), 4)
    if name == "stacked":  # activations that keep their output, back to back
        return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Sigmoid(), nn.Tanh(),
                             nn.Linear(16, 4)), _data((12,), 4)
    return build_model(name, (32,), 10, seed=0), _data((32,), 10)


def _trainers(
    model: nn.Module, data: FederatedData, mu: float = 0.0
) -> tuple[ReferenceTrainer, BatchedTrainer]:
    return (ReferenceTrainer(model, data, EPOCHS, BATCH, LR, mu=mu),
            BatchedTrainer(model, data, EPOCHS, BATCH, LR, mu=mu))


@pytest.mark.parametrize("mu", [0.0, 0.5])
@pytest.mark.parametrize(("name", "path"), [
    ("tiny", "linear"), ("compact", "linear"), ("chain", "linear"), ("stacked", "linear"),
    ("dscnn", "generic"), ("residual", "generic"), ("mobile", "reference"),
])
def test_matches_reference_over_rounds(name, path, mu):
    """Batched results equal the reference's, device by device, round after round, with
    and without FedProx's proximal term."""
    model, data = _case(name)
    ref, bat = _trainers(model, data, mu)
    assert bat.path == path
    bat.chunk = 4  # chunks of 4 and 2 jobs: clients train chunk by chunk
    space = ParamSpace.of(model)
    gen = torch.Generator().manual_seed(1)
    weights = [space.vector(model) + 0.01 * torch.randn(space.size, generator=gen)
               for _ in COUNTS]
    for round_ in range(3):
        seeds = [(7, round_, device) for device in range(len(COUNTS))]
        expected = [ref.submit(d, weights[d], seeds[d]) for d in range(len(COUNTS))]
        got = [bat.submit(d, weights[d], seeds[d]) for d in range(len(COUNTS))]
        got[0].result()
        assert not bat.pending
        for want, have in zip(expected, got, strict=True):
            assert have.result().device.type == "cpu"
            torch.testing.assert_close(have.result(), want.result(), atol=ATOL, rtol=0)
        weights = [job.result() for job in got]


@pytest.mark.parametrize("name", ["compact", "residual"])
def test_result_ignores_flush_mates(name):
    """A job trained alone equals the same job trained among others, in any order."""
    model, data = _case(name)
    space = ParamSpace.of(model)
    start = space.vector(model)
    alone = BatchedTrainer(model, data, EPOCHS, BATCH, LR)
    solo = alone.submit(3, start, (1, 3)).result()
    crowd = BatchedTrainer(model, data, EPOCHS, BATCH, LR)
    others = [crowd.submit(d, start * 0.5, (2, d)) for d in (5, 0, 4)]
    mixed = crowd.submit(3, start, (1, 3))
    others.append(crowd.submit(1, start, (2, 1)))
    torch.testing.assert_close(mixed.result(), solo, atol=1e-6, rtol=0)


def test_chunking_and_padding_do_not_change_results():
    """Chunk size, worker threads and the padding of mixed partial batches change no result."""
    counts = (9, 10, 15, 17, 3, 16, 2, 1)  # last batches of 1, 2, 7 and 1 samples share steps
    model, data = build_model("compact", (32,), 10, seed=0), _data((32,), 10, counts=counts)
    ref = ReferenceTrainer(model, data, EPOCHS, BATCH, LR)
    start = ParamSpace.of(model).vector(model)
    want = [ref.submit(d, start, (4, d)).result() for d in range(len(counts))]
    for chunk, workers in [(1, 1), (3, 2), (2, 3), (8, 2)]:
        bat = BatchedTrainer(model, data, EPOCHS, BATCH, LR)
        bat.chunk, bat.workers = chunk, workers
        jobs = [bat.submit(d, start, (4, d)) for d in range(len(counts))]
        for job, expected in zip(jobs, want, strict=True):
            torch.testing.assert_close(job.result(), expected, atol=ATOL, rtol=0)


def test_dropout_trains_job_by_job_exactly():
    """Dropout models take the reference path and give bit-identical results."""
    model, data = _case("mobile")
    assert needs_reference(model) == "Dropout draws from the torch RNG job by job"
    ref, bat = _trainers(model, data)
    start = ParamSpace.of(model).vector(model)
    for device in range(len(COUNTS)):
        assert torch.equal(bat.submit(device, start, (device,)).result(),
                           ref.submit(device, start, (device,)).result())


def test_make_trainer_picks_reference_only_when_needed():
    """make_trainer batches every model except those drawing random numbers in training."""
    for name, kind in [("compact", BatchedTrainer), ("dscnn", BatchedTrainer),
                       ("mobile", ReferenceTrainer), ("residual", BatchedTrainer)]:
        model, data = _case(name)
        assert type(make_trainer(model, data, EPOCHS, BATCH, LR, "cpu")) is kind


def test_cancelled_and_empty_jobs():
    """A cancelled job is not trained; a device without samples keeps its start weights."""
    model, _ = _case("tiny")
    data = _data((32,), 10, counts=(0, 5))
    bat = BatchedTrainer(model, data, EPOCHS, BATCH, LR)
    start = ParamSpace.of(model).vector(model)
    dropped = bat.submit(1, start, (0,))
    bat.cancel(dropped)
    empty = bat.submit(0, start, (1,))
    assert torch.equal(empty.result(), start)
    assert dropped._result is None and not bat.pending
    bat.flush()  # nothing pending: a no-op


def test_vmap_refusal_falls_back_to_reference():
    """A model vmap cannot batch still trains, job by job, with a warning."""
    model, data = Branchy(), _data((12,), 4)
    ref, bat = _trainers(model, data)
    start = ParamSpace.of(model).vector(model)
    with pytest.warns(RuntimeWarning, match="job by job"):
        got = bat.submit(2, start, (3,)).result()
    assert bat.path == "reference"
    torch.testing.assert_close(got, ref.submit(2, start, (3,)).result(), atol=0, rtol=0)
