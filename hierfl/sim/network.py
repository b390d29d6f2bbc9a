"""Transfers over store-and-forward paths: total time and the share a device's radio is on.

The formulas work element-wise: a hop may carry one bandwidth and latency per device (numpy
columns) and the payload one size per device, giving one Transfer for a whole cohort.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hierfl.costs import hop_s, transfer_s
from hierfl.topology import Hop


@dataclass(frozen=True)
class Transfer:
    """One payload over a path: ``total_s`` in all, the device radio busy ``radio_s`` of it.

    ``radio_lead_s`` is when, from the start, the device's own hop begins: 0 when it
    sends (first hop), ``total_s - radio_s`` when it receives (last hop). Each field is a
    number or an array with one entry per device.
    """

    total_s: float | np.ndarray
    radio_s: float | np.ndarray
    radio_lead_s: float | np.ndarray


def upload(payload_bytes: int | np.ndarray, hops: tuple[Hop, ...]) -> Transfer:
    """A device sending over ``hops``: its radio works on the first hop only."""
    radio_s = hop_s(payload_bytes, *hops[0])
    return Transfer(transfer_s(payload_bytes, hops), radio_s, 0.0)


def download(payload_bytes: int | np.ndarray, hops: tuple[Hop, ...]) -> Transfer:
    """A device receiving over ``hops``: its radio works on the last hop only."""
    total_s = transfer_s(payload_bytes, hops)
    radio_s = hop_s(payload_bytes, *hops[-1])
    return Transfer(total_s, radio_s, total_s - radio_s)
