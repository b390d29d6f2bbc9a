"""What a server can predict of a device's next round before selecting it: seconds and joules.

The prediction uses only what the server knows: the device's profile (compute, link and power
figures), the model's FLOPs and payload sizes for the device's variant, and the links on its
path. It assumes the device has its path to itself (no other flow shares a link) and no
variability: a best case, the same for every candidate, which is what ranking needs. The
simulation itself plays the round with contention, variability and battery limits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hierfl.costs import train_flops
from hierfl.sim.network import DOWN, UP, bytes_per_s


@dataclass(frozen=True)
class RoundForecast:
    """Predicted seconds and joules of one round (download, compute, upload, radio tail)
    for each device, index-aligned with the devices asked about."""

    download_s: np.ndarray
    compute_s: np.ndarray
    upload_s: np.ndarray
    energy_j: np.ndarray

    @property
    def seconds(self) -> np.ndarray:
        """From the model leaving the aggregator to the update arriving."""
        return self.download_s + self.compute_s + self.upload_s


def forecast_round(sim, devices: np.ndarray) -> RoundForecast:
    """The uncontended round of each of ``devices`` (see the module docstring).

    A transfer takes its path latency plus its bytes at the slowest of its access link and
    the shared links on its path; compute takes the variant's training FLOPs at the profile's
    MFLOP/s. Energy: receive, compute and transmit power over those phases, plus one radio
    tail after the upload (the tail after the download is cut by compute).
    """
    devices = np.asarray(devices, dtype=np.int64)
    fleet = sim.fleet
    download_s = _transfer_s(sim, devices, DOWN, sim.down_bytes(devices))
    upload_s = _transfer_s(sim, devices, UP, sim.up_bytes(devices))
    flops = train_flops(sim.forward_flops_of(devices), fleet.samples[devices],
                        sim.scenario.run.local_epochs)
    compute_s = flops / (fleet.compute_mflops[devices] * 1e6)
    tail_j = sim.battery.tail_w[devices] * sim.battery.tail_s[devices]
    energy_j = (fleet.power_rx_w[devices] * download_s
                + fleet.power_compute_w[devices] * compute_s
                + fleet.power_tx_w[devices] * upload_s + tail_j)
    return RoundForecast(download_s, compute_s, upload_s, energy_j)


def _transfer_s(sim, devices: np.ndarray, direction: int, nbytes: np.ndarray) -> np.ndarray:
    """Latency plus bytes at the path's bottleneck, for one direction."""
    topo = sim.topo
    access = topo.access_up_kbps if direction == UP else topo.access_down_kbps
    to_cloud = sim.scenario.topology.mode == "cloud_only"
    paths, latency_s = sim.links.device_paths(topo.edge_of[devices], direction, to_cloud)
    capacity = np.append(sim.links.capacity_bytes_s, np.inf)  # -1 (no link) reads inf
    bottleneck = np.minimum(bytes_per_s(access[devices]), capacity[paths].min(axis=1))
    return latency_s + topo.access_ms[devices] / 1000 + nbytes / bottleneck
