"""FedDF ensemble distillation (Lin et al., NeurIPS 2020): the cloud distils the ensemble of
the models that arrived into the global model on unlabelled proxy inputs.

The teacher is the ensemble's averaged logits; the student (the aggregated global model)
takes ``steps`` Adam steps on the KL divergence from the teacher's softened distribution
to its own, both at ``temperature``. The ensemble is a list of (module, flat weights)
pairs, so members may be different architectures (HeteroFL tiers) as long as each maps
the proxy inputs to the same classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from hierfl.learn.data import FederatedData
from hierfl.learn.trainer import ParamSpace
from hierfl.scenario import DistillationConfig

Member = tuple[nn.Module, torch.Tensor]
ADAM_FLOPS_PER_PARAM = 13
"""FLOPs of one Adam update per parameter: m 3, v 4, the bias-corrected denominator 3, step 3."""


def proxy_count(settings: DistillationConfig, pool_samples: int) -> int:
    """Inputs in the proxy set: ``proxy_samples``, at most the pool with ``proxy = "pool"``.

    >>> proxy_count(DistillationConfig(proxy_samples=256), 100)
    100
    """
    if settings.proxy == "pool":
        return min(settings.proxy_samples, pool_samples)
    return settings.proxy_samples


def proxy_inputs(
    data: FederatedData, settings: DistillationConfig, rng: np.random.Generator
) -> torch.Tensor:
    """The unlabelled proxy set: ``proxy_samples`` inputs drawn without replacement from the
    devices' pooled training inputs (``pool``; at most all of them), or standard normal
    inputs shaped like the data (``noise``)."""
    if settings.proxy == "pool":
        picked = rng.choice(len(data.x), size=proxy_count(settings, len(data.x)), replace=False)
        return data.x[torch.as_tensor(np.sort(picked))]
    noise = rng.standard_normal((settings.proxy_samples, *data.input_shape))
    return torch.as_tensor(noise, dtype=torch.float32)


@torch.no_grad()
def ensemble_logits(members: Sequence[Member], x: torch.Tensor) -> torch.Tensor:
    """The members' logits on ``x``, averaged with equal weight (FedDF's AvgLogits)."""
    total = None
    for module, flat in members:
        logits = functional_call(module, ParamSpace.of(module).unflatten(flat), (x,))
        total = logits if total is None else total + logits
    if total is None:
        raise ValueError("an ensemble needs at least one member")
    return total / len(members)


def kl_to_teacher(
    module: nn.Module, flat: torch.Tensor, x: torch.Tensor, teacher: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Mean over ``x`` of KL(softmax(teacher / T) || softmax(student / T)), times T^2."""
    student = functional_call(module, ParamSpace.of(module).unflatten(flat), (x,))
    target = F.log_softmax(teacher / temperature, dim=1)
    own = F.log_softmax(student / temperature, dim=1)
    return F.kl_div(own, target, log_target=True, reduction="batchmean") * temperature**2


def distill(
    module: nn.Module,
    start: torch.Tensor,
    members: Sequence[Member],
    x: torch.Tensor,
    settings: DistillationConfig,
    rng: np.random.Generator,
) -> torch.Tensor:
    """The flat weights of ``module`` after distilling ``members`` into it from ``start``.

    Minibatches of ``batch_size`` proxy inputs in seeded random orders, epoch after epoch.
    """
    teacher = ensemble_logits(members, x)
    flat = start.detach().clone().requires_grad_(True)
    adam = torch.optim.Adam([flat], lr=settings.learning_rate)
    batch = min(settings.batch_size, len(x))
    order = np.empty(0, dtype=np.int64)
    was_training = module.training
    module.eval()  # no dropout or batch statistics in the student's or teachers' logits
    for _ in range(settings.steps):
        if len(order) < batch:
            order = np.concatenate([order, rng.permutation(len(x))])
        rows, order = torch.as_tensor(order[:batch]), order[batch:]
        adam.zero_grad()
        kl_to_teacher(module, flat, x[rows], teacher[rows], settings.temperature).backward()
        adam.step()
    module.train(was_training)
    return flat.detach()


def distill_flops(
    teacher_flops: int, forward_flops: int, n_params: int, settings: DistillationConfig,
    proxy_samples: int,
) -> int:
    """FLOPs of one distillation: every member's forward pass over the proxy set (teacher
    logits, once; ``teacher_flops`` is the members' forward FLOPs per sample, summed), then
    ``steps`` student steps of a forward and backward pass (3 forward) over a minibatch and
    an Adam update.

    >>> distill_flops(2 * 1000, 1000, 500, DistillationConfig(steps=10, batch_size=4), 8)
    201000
    """
    batch = min(settings.batch_size, proxy_samples)
    teacher = teacher_flops * proxy_samples
    student = settings.steps * (3 * forward_flops * batch + ADAM_FLOPS_PER_PARAM * n_params)
    return teacher + student
