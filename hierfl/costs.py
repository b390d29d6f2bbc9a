"""Pure timing, energy and memory formulas (docs/concepts.md); the simulation waits for them.

Units are in the names: seconds (_s), joules (_j), watts (_w), bytes, MFLOP/s, kbps, ms.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def train_flops(forward_flops: int, samples: int, local_epochs: int) -> int:
    """FLOPs of local training: backward costs about twice the forward pass.

    >>> train_flops(8832, 50, 2)
    2649600
    """
    return 3 * forward_flops * samples * local_epochs


def prox_flops(n_params: int, samples: int, local_epochs: int, batch_size: int) -> int:
    """Extra FLOPs of FedProx's proximal term: each SGD step adds ``mu * (w - w_start)`` to
    the gradient, 3 FLOPs per parameter (subtract, scale, add), one step per minibatch.

    >>> prox_flops(4522, 50, 2, 8)  # 2 epochs of ceil(50 / 8) = 7 steps
    189924
    """
    return 3 * n_params * local_epochs * -(-samples // batch_size)


def compute_s(flops: float, compute_mflops: float) -> float:
    """Seconds to execute ``flops`` at ``compute_mflops`` (10^6 FLOP/s).

    >>> compute_s(2_649_600, 100)
    0.026496
    """
    return flops / (compute_mflops * 1e6)


def transfer_s(payload_bytes: int, hops: Iterable[tuple[float, float]]) -> float:
    """Seconds to move ``payload_bytes`` over ``hops`` of (bandwidth_kbps, latency_ms) with
    no other flow about: the path latency, then the bytes at the slowest link's rate
    (cut-through, as the flow model has it; ``sim.flows`` shares links between flows).

    >>> round(transfer_s(1000, [(100, 50), (8000, 20)]), 12)
    0.15
    """
    hops = list(hops)
    if not hops:
        return 0.0
    latency_s = sum(latency for _, latency in hops) / 1000
    return latency_s + 8 * payload_bytes / (1000 * min(bandwidth for bandwidth, _ in hops))


def aggregate_flops(n_params: int, n_updates: int) -> int:
    """FLOPs of a weighted average: one multiply and one add per element per update."""
    return 2 * n_params * n_updates


def energy_j(power_w: float, seconds: float) -> float:
    """Joules drawn at ``power_w`` for ``seconds``."""
    return power_w * seconds


def capacity_j(battery_mah: float, voltage_v: float) -> float:
    """Joules in a full battery.

    >>> capacity_j(500, 3.7)
    6660.0
    """
    return battery_mah / 1000 * 3600 * voltage_v


def seconds_until_empty(remaining_j: float, power_w: float) -> float:
    """Seconds until a battery holding ``remaining_j`` is empty at ``power_w`` (inf if 0 W).

    >>> seconds_until_empty(10.0, 0.5)
    20.0
    """
    return math.inf if power_w <= 0 else remaining_j / power_w


def train_bytes(
    n_params: int, batch_size: int, activations_per_sample: int, keeps_residual: bool = False
) -> int:
    """Memory needed to train: weights, gradients and one batch of activations, float32,
    plus the error-feedback residual (one float32 per parameter) when the device keeps one.

    >>> train_bytes(4522, 8, 266), train_bytes(4522, 8, 266, keeps_residual=True)
    (44688, 62776)
    """
    params = (3 if keeps_residual else 2) * n_params
    return 4 * (params + batch_size * activations_per_sample)


def fits_in_memory(memory_kb: float, needed_bytes: int) -> bool:
    """Whether a device with ``memory_kb`` KiB can hold ``needed_bytes``.

    >>> fits_in_memory(512, 44688), fits_in_memory(32, 44688)
    (True, False)
    """
    return memory_kb * 1024 >= needed_bytes
