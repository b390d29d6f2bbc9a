"""Static batch norm (sBN; HeteroFL, Diao et al., ICLR 2021, section 3.2).

In local training every batch-norm layer normalises with the batch's own statistics and
tracks none, so nothing but parameters federates (a layer's affine weight and bias are
parameters like any other, slice-averaged in a width family). Before a model is evaluated,
the evaluator computes its statistics once, with those weights, in one cumulative pass
(``momentum=None``) over the fleet's training samples, and evaluates in eval mode with them.

The pass takes at most ``STATS_SAMPLES`` training samples, spread evenly over the rows of
every device (no random draw), in near-equal batches of at most ``STATS_BATCH``: its cost
stays that of a few evaluations however large the fleet, and 4,096 samples estimate a
channel's mean to 1/64 of its standard deviation. Like evaluation, it costs no simulated
time: it is the evaluator's work, not the fleet's.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from weakref import WeakKeyDictionary

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from hierfl.errors import HierflError

__all__ = [
    "BATCH_NORMS",
    "STATS_BATCH",
    "STATS_SAMPLES",
    "batch_norms",
    "eval_buffers",
    "freeze",
    "make_static",
    "statistics",
    "stats_rows",
    "unit_statistics",
    "use_training_data",
]

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
STATS_SAMPLES = 4096
"""Training samples the statistics pass reads, at most."""
STATS_BATCH = 1024
"""Samples per batch of the statistics pass, at most."""

BatchNorm = nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d
_samples: WeakKeyDictionary[nn.Module, torch.Tensor] = WeakKeyDictionary()
_last: WeakKeyDictionary[nn.Module, tuple[torch.Tensor, dict[str, torch.Tensor]]] = (
    WeakKeyDictionary()
)


def batch_norms(model: nn.Module) -> list[tuple[str, BatchNorm]]:
    """The batch-norm layers of ``model`` with their qualified names.

    >>> [name for name, _ in batch_norms(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)))]
    ['1']
    """
    return [(name, m) for name, m in model.named_modules() if isinstance(m, BATCH_NORMS)]


def make_static(model: nn.Module) -> nn.Module:
    """Make every batch-norm layer of ``model`` static (in place): batch statistics in
    training, no running buffers to mutate or to federate. Returns ``model``."""
    for _, layer in batch_norms(model):
        layer.track_running_stats, layer.momentum = False, None
        layer.running_mean = layer.running_var = layer.num_batches_tracked = None
    return model


def stats_rows(total: int, cap: int = STATS_SAMPLES) -> np.ndarray:
    """Rows of the training data the statistics pass reads: all, or ``cap`` evenly spread.

    >>> stats_rows(5).tolist(), stats_rows(9, cap=3).tolist()
    ([0, 1, 2, 3, 4], [0, 4, 8])
    """
    if total <= cap:
        return np.arange(total)
    return np.linspace(0, total - 1, cap).round().astype(np.int64)


def use_training_data(model: nn.Module, x: torch.Tensor) -> None:
    """Let the evaluator compute ``model``'s statistics over the training inputs ``x`` (all
    devices' rows); a model without batch norm needs none."""
    if batch_norms(model):
        _samples[model] = x[torch.as_tensor(stats_rows(len(x)), device=x.device)]
        _last.pop(model, None)


@torch.no_grad()
def statistics(
    model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, batch: int = STATS_BATCH
) -> dict[str, torch.Tensor]:
    """Each batch-norm layer's ``running_mean`` and ``running_var`` under ``params``: a plain
    torch pass over ``x`` in train mode, ``momentum=None`` (the average over near-equal
    batches of each batch's mean and unbiased variance)."""
    probe = copy.deepcopy(model).train()
    layers = batch_norms(probe)
    device = x.device
    for _, layer in layers:
        layer.track_running_stats, layer.momentum = True, None
        layer.register_buffer("running_mean", torch.zeros(layer.num_features, device=device))
        layer.register_buffer("running_var", torch.ones(layer.num_features, device=device))
        layer.register_buffer("num_batches_tracked", torch.tensor(0, device=device))
    for part in torch.tensor_split(x, max(1, math.ceil(len(x) / batch))):
        functional_call(probe, params, (part,))
    found = {}
    for name, layer in layers:
        found[f"{name}.running_mean"] = layer.running_mean
        found[f"{name}.running_var"] = layer.running_var
    return found


def eval_buffers(
    model: nn.Module, params: dict[str, torch.Tensor], flat: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The statistics ``model`` is evaluated with under ``params`` (whose flat vector is
    ``flat``); none without batch norm. The last weights' statistics are kept per model, so
    scoring one model on many subsets computes them once."""
    if not batch_norms(model):
        return {}
    last = _last.get(model)
    if last is not None and last[0].device == flat.device and torch.equal(last[0], flat):
        return last[1]
    x = _samples.get(model)
    if x is None:
        raise HierflError(
            f"static batch norm: {type(model).__name__} has BatchNorm layers but no training "
            "data to compute their statistics from (hierfl.learn.sbn.use_training_data)"
        )
    device = flat.device
    found = statistics(model, {k: v.to(x.device) for k, v in params.items()}, x)
    found = {name: t.to(device) for name, t in found.items()}
    _last[model] = (flat.detach().clone(), found)
    return found


def freeze(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Give ``model``'s batch-norm layers the statistics of its current weights over the
    training inputs ``x`` (as the evaluator computes them) as running buffers, so that eval
    mode (and an export) uses them. Returns ``model``."""
    layers = batch_norms(model)
    if not layers:
        return model
    sample = x[torch.as_tensor(stats_rows(len(x)))]
    found = statistics(model, dict(model.named_parameters()), sample)
    for name, layer in layers:
        layer.track_running_stats = True
        layer.register_buffer("running_mean", found[f"{name}.running_mean"])
        layer.register_buffer("running_var", found[f"{name}.running_var"])
    return model


@contextmanager
def unit_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with zero-mean, unit-variance running buffers on its static batch-norm
    layers for the duration, so eval mode takes any batch (one sample included)."""
    layers = [layer for _, layer in batch_norms(model) if layer.running_mean is None]
    for layer in layers:
        device = layer.weight.device if layer.weight is not None else None
        layer.running_mean = torch.zeros(layer.num_features, device=device)
        layer.running_var = torch.ones(layer.num_features, device=device)
    try:
        yield model
    finally:
        for layer in layers:
            layer.running_mean = layer.running_var = None
