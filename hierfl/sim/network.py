"""Transfers over store-and-forward paths: total time and the share a device's radio is on."""

from __future__ import annotations

from dataclasses import dataclass

from hierfl.costs import hop_s, transfer_s
from hierfl.topology import Hop


@dataclass(frozen=True)
class Transfer:
    """One payload over a path: ``total_s`` in all, the device radio busy ``radio_s`` of it.

    ``radio_lead_s`` is when, from the start, the device's own hop begins: 0 when it
    sends (first hop), ``total_s - radio_s`` when it receives (last hop).
    """

    total_s: float
    radio_s: float
    radio_lead_s: float


def upload(payload_bytes: int, hops: tuple[Hop, ...]) -> Transfer:
    """A device sending over ``hops``: its radio works on the first hop only."""
    radio_s = hop_s(payload_bytes, *hops[0])
    return Transfer(transfer_s(payload_bytes, hops), radio_s, 0.0)


def download(payload_bytes: int, hops: tuple[Hop, ...]) -> Transfer:
    """A device receiving over ``hops``: its radio works on the last hop only."""
    total_s = transfer_s(payload_bytes, hops)
    radio_s = hop_s(payload_bytes, *hops[-1])
    return Transfer(total_s, radio_s, total_s - radio_s)
