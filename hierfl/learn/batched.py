"""Batched local SGD: every job pending at a flush trains together, one step for all clients.

Each client's parameters sit on a leading client axis; at step ``t`` every client that still
has a minibatch takes it, gathered from ``data.x`` with one index tensor. The schedule is the
reference's, client by client: ``epoch_orders(job.seed, samples, local_epochs)``, minibatches
of ``batch_size`` in order, the last partial batch of each epoch included, loss the mean
cross-entropy over the client's real samples. A partial batch is padded and its padding gets
weight 0; clients are sorted by their number of steps, so the clients still training at step
``t`` are a prefix of the stack and finished ones are not computed at all. A job's result
therefore depends on its start, data and seed only, not on the other jobs of its flush.
With FedProx's ``mu > 0`` each step also pulls every client's weights towards its start,
``- learning_rate * mu * (w - w_start)``, from a copy of the starts kept for the flush.

Three paths, chosen once per model:

- ``linear``: ``Flatten`` (first), ``nn.Linear`` and elementwise activations in a chain, as
  the zoo's MLPs; hand-written forward and backward with ``torch.baddbmm`` over stacked
  weights, updated in place.
- ``generic``: any other module, ``vmap(grad(loss))`` over ``torch.func.functional_call``.
  Batch norm (static, hierfl.learn.sbn) normalises over a client's whole minibatch, padding
  included, so with batch norm each step trains the clients of each real minibatch size
  together, unpadded.
- ``reference``: models that draw random numbers in training (Dropout, RReLU) cannot match
  the reference's per-job torch RNG draw for draw under ``vmap``, so their jobs train one
  after another with ``ReferenceTrainer.train``; so does a model ``vmap`` rejects.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from hierfl.learn.data import FederatedData
from hierfl.learn.linear_plan import Activation, LinearLayer, linear_plan
from hierfl.learn.sbn import batch_norms
from hierfl.learn.trainer import Job, ReferenceTrainer, epoch_orders

__all__ = ["BatchedTrainer", "make_trainer", "needs_reference"]

_RANDOM_LAYERS = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.RReLU,
)
_aten = torch.ops.aten


def needs_reference(model: nn.Module) -> str | None:
    """Why ``model`` must train job by job (it draws random numbers in training), or None.

    >>> needs_reference(nn.Sequential(nn.Linear(4, 2), nn.Dropout(0.2)))
    'Dropout draws from the torch RNG job by job'
    >>> needs_reference(nn.Linear(4, 2)) is None
    True
    """
    for module in model.modules():
        if isinstance(module, _RANDOM_LAYERS):
            return f"{type(module).__name__} draws from the torch RNG job by job"
    return None


@dataclass(frozen=True)
class _Schedule:
    """Jobs sorted by steps (most first) and, per step, their minibatch rows and weights."""

    order: np.ndarray
    """(J,) position in the flush of each sorted job."""
    active: list[int]
    """Clients (a prefix of the sorted jobs) that take step t."""
    rows: torch.Tensor
    """(T, J, batch) int64 rows of ``data.x``; padding repeats a real row."""
    weights: torch.Tensor
    """(T, J, batch) float32: 1 / real samples in the batch, 0 for padding."""
    real: np.ndarray
    """(T, J) real samples in each minibatch (they come first in its row)."""

    def widths(self, begin: int, end: int) -> list[int]:
        """Per step, the widest real minibatch among jobs ``begin:end``: wider is padding."""
        return self.real[:, begin:end].max(axis=1, initial=0).tolist()


def _schedule(
    jobs: list[Job], data: FederatedData, epochs: int, batch: int, device: torch.device | str
) -> _Schedule:
    """Each job's ``epoch_orders`` cut into minibatches, laid out step by step."""
    devices = np.array([job.device for job in jobs], dtype=np.int64)
    counts = data.offsets[devices + 1] - data.offsets[devices]
    steps = epochs * -(-counts // batch)
    order = np.argsort(-steps, kind="stable")
    rows = np.full((len(jobs), int(steps.max(initial=0)), batch), -1, dtype=np.int64)
    for n in np.unique(counts[counts > 0]):  # jobs of equal size are cut in one go
        ranks = np.flatnonzero(counts[order] == n)
        picked = order[ranks]
        drawn = np.array([epoch_orders(jobs[i].seed, int(n), epochs) for i in picked])
        padded = np.full((len(picked), epochs, -(-n // batch) * batch), -1, dtype=np.int64)
        padded[:, :, :n] = drawn + data.offsets[devices[picked], None, None]
        rows[ranks, : steps[picked[0]]] = padded.reshape(len(picked), -1, batch)
    real = rows >= 0
    sizes = real.sum(axis=2)
    weights = real / np.maximum(sizes, 1)[:, :, None]
    rows = np.maximum(np.where(real, rows, rows[:, :, :1]), 0)
    active = (steps[order][None, :] > np.arange(rows.shape[1])[:, None]).sum(axis=1)
    return _Schedule(
        order=order,
        active=active.tolist(),
        rows=torch.as_tensor(rows.transpose(1, 0, 2).copy(), device=device),
        weights=torch.as_tensor(weights.transpose(1, 0, 2), dtype=torch.float32, device=device),
        real=sizes.T.copy(),
    )


CACHE_BYTES = 2 << 20
"""Weights of the clients trained together on CPU, bytes: about one core's L2 cache."""


def _chunk(n_params: int, device: str | torch.device) -> int:
    """Clients per chunk of the linear path: all on a GPU, a cache's worth on a CPU.

    >>> _chunk(2_842, "cpu"), _chunk(10_000_000, "cpu"), _chunk(2_842, "cuda") > 10**6
    (184, 16, True)
    """
    if torch.device(device).type != "cpu":
        return 1 << 30
    return max(16, CACHE_BYTES // (4 * n_params))


@contextmanager
def _one_intra_op_thread() -> Iterator[int]:
    """torch ops run on the calling thread only, for the duration; yields the former count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


class BatchedTrainer(ReferenceTrainer):
    """Trains every pending job in one batched call; results equal ``ReferenceTrainer``'s.

    ``path`` says how: ``"linear"``, ``"generic"`` or ``"reference"`` (see the module doc).

    On CPU the linear path trains chunks of ``chunk`` clients (a cache's worth) on
    ``workers`` threads (default: ``torch.get_num_threads()`` at flush time) while torch's
    intra-op threads are set to 1 for the flush: its ops are too small to split, and each
    split op waits for every intra-op thread, a whole scheduler slice when another process
    holds a core. Results depend on neither ``chunk`` nor ``workers``.
    """

    def __init__(
        self,
        model: nn.Module,
        data: FederatedData,
        local_epochs: int,
        batch_size: int,
        learning_rate: float,
        device: str = "cpu",
        mu: float = 0.0,
    ) -> None:
        super().__init__(model, data, local_epochs, batch_size, learning_rate, device, mu)
        random = needs_reference(model)
        self.plan = None if random else linear_plan(model, self.space, data.input_shape)
        self.path = "reference" if random else "linear" if self.plan else "generic"
        self._first = next(
            (i for i, s in enumerate(self.plan or []) if isinstance(s, LinearLayer)), 0
        )
        self._minus_one = torch.full((1, 1, 1), -1.0, device=device)
        self.chunk = _chunk(self.space.size, device)
        self.unpadded = bool(batch_norms(model))
        self.workers: int | None = None
        self._workers = 1

    def flush(self) -> None:
        """Train every pending job, all together; each job gets its result (on CPU)."""
        jobs = self.take_pending()
        if not jobs:
            return
        if self.path == "linear" and torch.device(self.device).type == "cpu":
            with _one_intra_op_thread() as threads:
                self._workers = max(1, self.workers or threads)
                self._train_batched(jobs)
        elif self.path != "reference":
            self._train_batched(jobs)
        if jobs[0]._result is None:  # models that draw random numbers, or that vmap refused
            for job in jobs:
                job._result = self.train(job)

    def _train_batched(self, jobs: list[Job]) -> None:
        sched = _schedule(jobs, self.data, self.local_epochs, self.batch_size, self.device)
        starts = self._starts([jobs[i] for i in sched.order])
        if self.path == "linear":
            trained = self._train_linear(starts, sched)
        else:
            trained = self._train_generic(self._flat(starts), sched)
        if trained is not None:
            for index, result in zip(sched.order, trained.cpu(), strict=True):
                jobs[index]._result = result

    def _starts(self, jobs: list[Job]) -> dict[str, torch.Tensor]:
        """Start weights of ``jobs`` stacked per parameter, (J, *shape) each, contiguous.

        Jobs usually share a few start tensors (the model their aggregator sent), so each
        distinct tensor is moved once and then gathered.
        """
        slots: dict[int, int] = {}
        picks = [slots.setdefault(id(job.start), len(slots)) for job in jobs]
        distinct = {id(job.start): job.start for job in jobs}
        base = torch.stack(list(distinct.values())).to(self.device, torch.float32)
        index = torch.as_tensor(picks, device=self.device)
        return {name: p.index_select(0, index) for name, p in self.space.unflatten(base).items()}

    def _train_linear(self, params: dict[str, torch.Tensor], sched: _Schedule) -> torch.Tensor:
        """Train chunk by chunk of clients, so a chunk's weights stay in cache all along."""
        anchor = {name: p.clone() for name, p in params.items()} if self.mu else None
        jobs = len(sched.order)
        chunks = [(begin, min(begin + self.chunk, jobs)) for begin in range(0, jobs, self.chunk)]
        workers = min(len(chunks), self._workers)
        if workers == 1:
            for begin, end in chunks:
                self._train_chunk(params, anchor, sched, begin, end)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda c: self._train_chunk(params, anchor, sched, *c), chunks))
        return self._flat(params)

    def _train_chunk(
        self,
        params: dict[str, torch.Tensor],
        anchor: dict[str, torch.Tensor] | None,
        sched: _Schedule,
        begin: int,
        end: int,
    ) -> None:
        """Every step of the sorted jobs ``begin:end``; their weights are updated in place.

        ``anchor`` holds the start weights FedProx pulls towards (None without FedProx)."""
        assert self.plan is not None
        layers = [
            (*self._pair(params, s, begin, end), *self._pair(anchor, s, begin, end))
            if isinstance(s, LinearLayer)
            else s
            for s in self.plan
        ]
        counts = np.clip(np.array(sched.active) - begin, 0, end - begin).tolist()
        for t, (k, width) in enumerate(zip(counts, sched.widths(begin, end), strict=True)):
            if not k:
                break
            self._linear_step(
                layers,
                sched.rows[t, begin : begin + k, :width],
                sched.weights[t, begin : begin + k, :width],
            )

    @staticmethod
    def _pair(
        params: dict[str, torch.Tensor] | None, layer: LinearLayer, begin: int, end: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(weight, bias) of ``layer`` for clients ``begin:end``; Nones where there are none."""
        if params is None:
            return None, None
        bias = params[layer.bias][begin:end] if layer.bias else None
        return params[layer.weight][begin:end], bias

    def _flat(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """(J, P): stacked parameters back in the flat layout, one row per job."""
        return torch.cat([params[name].flatten(1) for name in self.space.names], 1)

    def _linear_step(self, layers: list, rows: torch.Tensor, weights: torch.Tensor) -> None:
        """One SGD step for the first ``k = len(rows)`` clients of a chunk, updated in place.

        ``layers`` holds (weight, bias, start weight, start bias) per Linear of the plan
        (stacked over the chunk's clients; the starts None without FedProx) and the
        activation itself otherwise.
        """
        k, batch = rows.shape
        flat_rows = rows.reshape(-1)
        h = self.x.index_select(0, flat_rows).reshape(k, batch, -1)
        saved, sliced, fresh = [], [], False
        for layer in layers:
            if isinstance(layer, Activation):
                out = layer.inplace(h) if fresh and layer.inplace else layer.forward(h)
                saved.append(out if layer.saves_output else h)
                sliced.append(layer)
                h, fresh = out, False
                continue
            w, b, w0, b0 = (None if t is None else t[:k] for t in layer)
            saved.append(h)
            sliced.append((w, b, w0, b0))
            h = (
                torch.bmm(h, w.transpose(1, 2))
                if b is None
                else torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            )
            fresh = True
        # d(mean cross-entropy)/d(logits) = (softmax - onehot) / batch; torch.softmax is
        # slow along a short last dimension, so it is spelt out
        g = (h - h.amax(dim=2, keepdim=True)).exp_()
        g.div_(g.sum(dim=2, keepdim=True))
        labels = self.y.index_select(0, flat_rows).reshape(k, batch, 1)
        g.scatter_add_(2, labels, self._minus_one.expand(k, batch, 1))
        g.mul_(weights.unsqueeze(2))
        for i in range(len(sliced) - 1, self._first - 1, -1):
            layer = sliced[i]
            if isinstance(layer, Activation):
                g = layer.backward(g, saved[i])
                continue
            w, b, w0, b0 = layer
            below = torch.bmm(g, w) if i > self._first else g
            if w0 is not None:  # FedProx: w - lr * mu * (w - w0), one fused pass
                w.lerp_(w0, self.learning_rate * self.mu)
            w.baddbmm_(g.transpose(1, 2), saved[i], alpha=-self.learning_rate)
            if b is not None:
                if b0 is not None:
                    b.lerp_(b0, self.learning_rate * self.mu)
                b.sub_(g.sum(dim=1), alpha=self.learning_rate)
            g = below

    def _train_generic(self, flat: torch.Tensor, sched: _Schedule) -> torch.Tensor | None:
        start = flat.clone() if self.mu else None
        for t, (k, width) in enumerate(zip(sched.active, sched.widths(0, len(flat)), strict=True)):
            try:
                g = self._gradients(flat[:k], sched, t, width)
            except RuntimeError as error:  # only the first step can fail; nothing moved yet
                if t:
                    raise
                warnings.warn(
                    f"hierfl: vmap cannot train {type(self.model).__name__} "
                    f"({error}); training job by job",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self.path = "reference"
                return None
            if start is not None:
                g = g + self.mu * (flat[:k] - start[:k])
            flat[:k] -= self.learning_rate * g
        return flat

    def _gradients(
        self, flat: torch.Tensor, sched: _Schedule, t: int, width: int
    ) -> torch.Tensor:
        """Step ``t``'s gradient for the first ``len(flat)`` sorted clients, (k, P): at once,
        each minibatch padded to ``width``; or, ``unpadded``, by real minibatch size."""
        k = len(flat)
        sizes = sched.real[t, :k]
        if not self.unpadded or (sizes == width).all():
            return self._step(flat, sched.rows[t, :k, :width], sched.weights[t, :k, :width])
        g = torch.empty_like(flat)
        for size in np.unique(sizes).tolist():
            picked = torch.as_tensor(np.flatnonzero(sizes == size), device=flat.device)
            g[picked] = self._step(
                flat[picked], sched.rows[t, picked, :size], sched.weights[t, picked, :size]
            )
        return g

    def _step(self, flat: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``vmap(grad(loss))`` of the clients whose minibatches are ``rows`` (k, batch)."""
        x = self.x.index_select(0, rows.reshape(-1)).reshape(*rows.shape, *self.x.shape[1:])
        return vmap(grad(self._weighted_loss))(flat, x, self.y[rows], weights)

    def _weighted_loss(
        self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        logits = functional_call(self.model, self.space.unflatten(flat), (x,))
        return (F.cross_entropy(logits, y, reduction="none") * weights).sum()


def make_trainer(
    model: nn.Module,
    data: FederatedData,
    local_epochs: int,
    batch_size: int,
    learning_rate: float,
    device: str = "cpu",
    mu: float = 0.0,
) -> ReferenceTrainer | BatchedTrainer:
    """A ``BatchedTrainer``, or a ``ReferenceTrainer`` for models that need one; ``mu`` is
    FedProx's proximal weight (0: plain local SGD)."""
    kind = ReferenceTrainer if needs_reference(model) else BatchedTrainer
    return kind(model, data, local_epochs, batch_size, learning_rate, device, mu)
