"""Build a run from a Scenario: fleet, model, data, SimPy processes; return the Result."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import simpy
import torch
from torch import nn

from hierfl.aggregation import Slice, apply_deltas, fedavg, slice_fedavg
from hierfl.compression import DENSE, Codec, UpdateCodec, resolve_codec
from hierfl.costs import capacity_j, fits_in_memory, train_bytes
from hierfl.errors import ModelDoesNotFitError, ScenarioError
from hierfl.learn.batched import make_trainer
from hierfl.learn.data import data_shape, draw_sample_counts, make_data
from hierfl.learn.distill import proxy_inputs
from hierfl.learn.family import (
    FamilyTrainer,
    ModelFamily,
    assign_variants,
    build_family,
    check_every_variant_fits,
    variant_fits,
)
from hierfl.learn.models import ModelStats, build_model, model_stats
from hierfl.learn.trainer import Job, ParamSpace, ReferenceTrainer, evaluate
from hierfl.limits import check_memory, input_elements
from hierfl.optimizers import Optimizer, resolve_optimizer
from hierfl.plugins import FLEET_ARG
from hierfl.policies import Selection, resolve_selection
from hierfl.scenario import MODEL_NAMES, Scenario
from hierfl.sim import availability
from hierfl.sim.availability import Cursor
from hierfl.sim.battery import FleetBattery
from hierfl.sim.fleet_view import RoundHistory
from hierfl.sim.network import LinkLog, Links
from hierfl.topology import CLOUD, Topology, build_topology, string_index
from hierfl.trace import Trace

STREAM_SELECTION, STREAM_DATA, STREAM_TRAINING, STREAM_MODEL, STREAM_DISTILL = 1, 2, 3, 4, 5
ENCODE_ROWS = 256  # updates encoded as one array: bounds the codec's scratch memory


@dataclass
class Fleet:
    """Per-device figures as numpy columns (index = device number)."""

    samples: np.ndarray
    compute_mflops: np.ndarray
    power_compute_w: np.ndarray
    power_tx_w: np.ndarray
    power_rx_w: np.ndarray
    fits: np.ndarray
    mains: np.ndarray
    charge_w: np.ndarray

    @classmethod
    def build(
        cls, scenario: Scenario, topo: Topology, samples: np.ndarray, needed_bytes: int
    ) -> tuple[Fleet, FleetBattery]:
        """Columns from each device's profile, and the fleet's batteries, full."""
        profiles = [scenario.profile(name) for name in topo.profile_names]

        def column(get) -> np.ndarray:
            return np.array([get(p) for p in profiles], dtype=np.float64)[topo.profile_of]

        capacity = column(
            lambda p: np.inf if p.mains_powered else capacity_j(p.battery_mah, p.voltage_v)
        )
        tail_w, tail_s = column(lambda p: p.power_tail_w), column(lambda p: p.tail_s)
        fleet = cls(
            samples=samples,
            compute_mflops=column(lambda p: p.compute_mflops),
            power_compute_w=column(lambda p: p.power_compute_w),
            power_tx_w=column(lambda p: p.power_tx_w),
            power_rx_w=column(lambda p: p.power_rx_w),
            fits=column(lambda p: fits_in_memory(p.memory_kb, needed_bytes)).astype(bool),
            mains=np.isinf(capacity),
            charge_w=np.where(np.isinf(capacity), 0.0, column(lambda p: p.charge_w)),
        )
        idle_w = column(lambda p: p.power_idle_w)
        return fleet, FleetBattery(capacity, idle_w, tail_w, tail_s, fleet.charge_w)


@dataclass
class Update:
    """What arrives at an aggregator: the encoded payload and the samples behind it.

    With a model family, ``variant_samples`` (an edge's update) gives the samples behind
    each variant's slice; a device's update holds its own variant's slice only.
    """

    sender: int
    payload: bytes | None
    samples: int
    variant_samples: np.ndarray | None = None


@dataclass
class Simulation:
    """Everything the processes share; processes only yield, this holds the state."""

    scenario: Scenario
    env: simpy.Environment
    topo: Topology
    links: Links
    link_log: LinkLog
    fleet: Fleet
    battery: FleetBattery
    trace: Trace
    stats: ModelStats
    space: ParamSpace
    codec: UpdateCodec
    policy: Selection
    model: torch.nn.Module
    trainer: ReferenceTrainer | FamilyTrainer | None
    data: object | None
    trained: np.ndarray
    optimizers: dict[int, Optimizer]
    """Each aggregator's server optimiser, by trace node (the cloud is 0, edge e is 1 + e)."""
    busy: np.ndarray  # devices at work the aggregator has not committed (hierfl.sim.work)
    late: np.ndarray  # late updates per device
    availability: Cursor
    history: RoundHistory
    reported_s: np.ndarray  # availability changes are in the trace up to here, per device
    family: ModelFamily | None = None
    variant_of: np.ndarray | None = None
    """Each device's variant (index into ``family.variants``; -1: none fits)."""
    works: dict = field(default_factory=dict)  # aggregator (edge, -1: cloud) -> its Work
    buffers: dict = field(default_factory=dict)  # aggregator -> its Buffer (buffered trigger)
    round_rows: list[dict] = field(default_factory=list)
    evaluations: list[dict] = field(default_factory=list)
    global_weights: torch.Tensor | None = None
    residuals: dict[int, torch.Tensor] = field(default_factory=dict)
    on_round: Callable[[dict], None] | None = None
    first_round: int = 0
    proxy: torch.Tensor | None = None
    """The unlabelled proxy inputs of FedDF distillation (None without it or without learning)."""
    round_started_s: float = -np.inf  # when the last cloud round started

    # node numbering in the trace: cloud, edges, devices
    def device_node(self, device: int) -> int:
        return 1 + len(self.topo.edges) + device

    def edge_node(self, edge: int) -> int:
        return -1 if edge < 0 else 1 + edge

    @cached_property
    def policy_wants_fleet(self) -> bool:
        """Whether the selection policy takes a ``fleet`` keyword (it then gets a FleetView)."""
        try:
            return FLEET_ARG in inspect.signature(self.policy).parameters
        except (TypeError, ValueError):
            return False

    @cached_property
    def plugs(self) -> bool:
        """Whether the availability model ever plugs a device in (a trace may; markov and
        diurnal when ``plugged_probability > 0``)."""
        config = self.scenario.availability
        return config.model == "trace" or (config.plugged_probability or 0.0) > 0

    @cached_property
    def charging(self) -> bool:
        """Whether any battery can ever charge: a device with ``charge_w`` that gets plugged in."""
        return self.plugs and bool(self.fleet.charge_w.any())

    @property
    def learning(self) -> bool:
        return self.trainer is not None

    def submit(
        self, device: int, start: torch.Tensor | None, cloud_round: int, edge_round: int
    ) -> Job | None:
        """Queue local training of ``device`` from ``start`` (None in timing-only runs)."""
        if self.trainer is None or start is None:
            return None
        seed = (self.scenario.seed, STREAM_TRAINING, device, cloud_round, edge_round)
        return self.trainer.submit(device, start, seed)

    def encode(
        self, models: Sequence[torch.Tensor], base: torch.Tensor, senders: Sequence[int]
    ) -> list[bytes]:
        """The uplink payloads of ``models`` received as ``base``; ``senders[i]``, a trace
        node (a device or an edge), sent ``models[i]``.

        With a model family, a device's model is its variant, sent against that variant's
        slice of ``base``; an edge sends the full model. With error feedback, each sender adds
        its residual (what its codec lost so far) to its update before encoding and keeps
        what this encoding loses in turn.
        """
        senders = np.asarray(senders, dtype=np.int64)
        kinds = self._sender_variants(senders)
        payloads: list[bytes] = [b""] * len(models)
        for k in np.unique(kinds):
            picks = np.flatnonzero(kinds == k)
            space, index = self._layout(int(k))
            sent = self._encode([models[i] for i in picks], base[index], space, senders[picks])
            for i, payload in zip(picks, sent, strict=True):
                payloads[i] = payload
        return payloads

    def _sender_variants(self, senders: np.ndarray) -> np.ndarray:
        """Each sender's variant: -1 (the full model) for an edge, or without a family."""
        devices = senders - self.device_node(0)
        if self.family is None:
            return np.full(len(senders), -1)
        return np.where(devices >= 0, self.variant_of[np.maximum(devices, 0)], -1)

    def _layout(self, variant: int) -> tuple[ParamSpace, slice | torch.Tensor]:
        """The space of ``variant`` (-1: the full model) and its index into the full model."""
        if variant < 0:
            return self.space, slice(None)
        found = self.family.variants[variant]
        return found.space, found.index

    def _encode(
        self, models: Sequence[torch.Tensor], base: torch.Tensor, space: ParamSpace,
        senders: np.ndarray,
    ) -> list[bytes]:
        """Payloads of ``models`` laid out as ``space``, ``ENCODE_ROWS`` at a time as one array
        each with a built-in codec."""
        feedback = self.scenario.compression.error_feedback
        payloads = []
        for start in range(0, len(models), ENCODE_ROWS):
            stacked = torch.stack(list(models[start : start + ENCODE_ROWS]))
            sent = stacked - base if self.scenario.compression.payload == "delta" else stacked
            nodes = senders[start : start + ENCODE_ROWS].tolist()
            if feedback:
                sent = sent + torch.stack([self._residual(node, space.size) for node in nodes])
            encoded = self._encode_rows(sent, space)
            if feedback:
                lost = sent - self.decode(encoded, space)
                self.residuals.update(zip(nodes, lost, strict=True))
            payloads += encoded
        return payloads

    def _residual(self, node: int, size: int) -> torch.Tensor:
        """What ``node``'s codec has lost so far (zeros before its first upload)."""
        found = self.residuals.get(node)
        return torch.zeros(size) if found is None else found

    def _encode_rows(self, rows: torch.Tensor, space: ParamSpace) -> list[bytes]:
        """The payload of each row (a flat update laid out as ``space``), checked to be as
        long as ``payload_bytes`` says."""
        if self._rows_codec is not None:
            payloads = self._rows_codec.encode_rows(rows.numpy(), space.specs)
        else:
            payloads = [self.codec.encode(space.unflatten(row)) for row in rows]
        expected = self.codec.payload_bytes(space.specs)
        for payload in payloads:
            if len(payload) != expected:
                raise ScenarioError(
                    f"compression.codec: encode wrote {len(payload)} bytes, payload_bytes "
                    f"says {expected}; a codec's size must depend on the shapes alone"
                )
        return payloads

    @cached_property
    def _rows_codec(self) -> Codec | None:
        """The codec when it is exactly the built-in one, whose row methods encode in bulk.

        A subclass may override ``encode`` or ``decode``: it is called an update at a time.
        """
        return self.codec if type(self.codec) is Codec else None

    @cached_property
    def uplink_bytes(self) -> int:
        """Size of one update from the shapes alone (the codecs' sizes depend on no value)."""
        return self.codec.payload_bytes(self.space.specs)

    @cached_property
    def downlink_codec(self) -> Codec:
        """How every model is sent down, cloud to edge and edge to device."""
        return Codec(quantize=self.scenario.compression.downlink)

    @cached_property
    def downlink_bytes(self) -> int:
        """Size of one full model sent down (dense float32 unless ``compression.downlink``)."""
        return self.downlink_codec.payload_bytes(self.space.specs)

    def send_down(self, model: torch.Tensor | None) -> torch.Tensor | None:
        """The model its receiver decodes from the downlink bytes of ``model``."""
        if model is None or self.downlink_codec == DENSE:
            return model
        payload = self.downlink_codec.encode_rows(model[None].numpy(), self.space.specs)
        return torch.from_numpy(self.downlink_codec.decode_rows(payload, self.space.specs)[0])

    @cached_property
    def _spaces(self) -> list[ParamSpace]:
        """The layout each device variant trains: the family's, or the one model's."""
        return [self.space] if self.family is None else [v.space for v in self.family.variants]

    @cached_property
    def _variant_figures(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per variant: forward FLOPs, uplink bytes, downlink bytes."""
        stats = [self.stats] if self.family is None else [v.stats for v in self.family.variants]
        return (
            np.array([s.forward_flops for s in stats], dtype=np.int64),
            np.array([self.codec.payload_bytes(s.specs) for s in self._spaces], dtype=np.int64),
            np.array([self.downlink_codec.payload_bytes(s.specs) for s in self._spaces],
                     dtype=np.int64),
        )

    def _variants_of(self, devices: np.ndarray) -> np.ndarray:
        """Each device's variant (all 0: the one model, without a family)."""
        if self.variant_of is None:
            return np.zeros(len(devices), np.int64)
        return self.variant_of[devices]

    def forward_flops_of(self, devices: np.ndarray) -> np.ndarray:
        """Forward FLOPs of one sample on each device's variant."""
        return self._variant_figures[0][self._variants_of(devices)]

    def params_of(self, devices: np.ndarray) -> np.ndarray:
        """Parameters of each device's variant (FedProx's proximal term costs FLOPs per one)."""
        sizes = np.array([space.size for space in self._spaces], dtype=np.int64)
        return sizes[self._variants_of(devices)]

    def up_bytes(self, devices: np.ndarray) -> np.ndarray:
        """Uplink payload bytes of each device's update (its variant's shapes)."""
        return self._variant_figures[1][self._variants_of(devices)]

    def down_bytes(self, devices: np.ndarray) -> np.ndarray:
        """Bytes of the model each device receives (its variant's slice, in the downlink
        codec)."""
        return self._variant_figures[2][self._variants_of(devices)]

    def variant_samples(self, updates: Sequence[Update]) -> np.ndarray | None:
        """Samples behind each variant's slice among device ``updates`` (None: no family)."""
        if self.family is None:
            return None
        senders = np.array([u.sender for u in updates], dtype=np.int64)
        samples = np.array([u.samples for u in updates], dtype=np.float64)
        return np.bincount(self.variant_of[senders], samples, len(self.family.variants))

    def tier_accuracy(self) -> dict[str, float]:
        """Each variant's slice of the global model on the test set, as rounds.csv columns
        ``accuracy_w<width>`` (none without a family or without learning)."""
        if self.family is None or self.trainer is None:
            return {}
        data = self.trainer.data
        return {
            tier_column(v.width): evaluate(v.model, v.space, self.global_weights[v.index],
                                           data.x_test, data.y_test)[0]
            for v in self.family.variants
        }

    def decode(self, payloads: Sequence[bytes], space: ParamSpace) -> torch.Tensor:
        """(N, P) float32 rows of ``payloads`` laid out as ``space``: what the receiver reads."""
        specs = space.specs
        if self._rows_codec is not None:
            return torch.from_numpy(self._rows_codec.decode_rows(payloads, specs))
        tensors = [self.codec.decode(payload, specs) for payload in payloads]
        return torch.stack([space.flatten(t) for t in tensors])

    def aggregate(
        self, node: int, base: torch.Tensor | None, updates: list[Update]
    ) -> torch.Tensor | None:
        """Decode every update, FedAvg them weighted by samples, and let ``node``'s server
        optimiser step from ``base`` (the model it sent) towards that average.

        Deltas are applied to ``base``, the aggregator's own model, not the copy its senders
        decoded: what the downlink codec lost is not added to the model again.
        """
        if base is None:
            return None
        return self.optimizers[node].step(base, self.average(base, updates))

    def average(self, base: torch.Tensor, updates: list[Update]) -> torch.Tensor:
        """The sample-weighted FedAvg of ``updates`` received as ``base`` (slice by slice
        with a model family)."""
        if self.family is not None:
            return self._aggregate_slices(base, updates)
        decoded = self.decode([u.payload for u in updates], self.space)
        weights = [u.samples for u in updates]
        if self.scenario.compression.payload == "delta":
            return apply_deltas(base, decoded, weights)
        return fedavg(decoded, weights)

    def _aggregate_slices(self, base: torch.Tensor, updates: list[Update]) -> torch.Tensor:
        """HeteroFL: a device's update holds its variant's slice; an edge's holds the full
        model, each variant's slice weighted by the samples behind it at that edge."""
        variants = self.family.variants
        rows: list[list[torch.Tensor]] = [[] for _ in variants]
        weights: list[list[float]] = [[] for _ in variants]
        edges = [u for u in updates if u.variant_samples is not None]
        if edges:
            full = self.decode([u.payload for u in edges], self.space)
            for update, row in zip(edges, full, strict=True):
                for k in np.flatnonzero(update.variant_samples):
                    rows[k].append(row[variants[k].index])
                    weights[k].append(float(update.variant_samples[k]))
        devices = [u for u in updates if u.variant_samples is None]
        kinds = self.variant_of[[u.sender for u in devices]]
        for k in np.unique(kinds):
            mine = [u for u, kind in zip(devices, kinds, strict=True) if kind == k]
            rows[k].extend(self.decode([u.payload for u in mine], variants[k].space))
            weights[k].extend(float(u.samples) for u in mine)
        slices = [
            Slice(variant.index, torch.stack(rows[k]), weights[k])
            for k, variant in enumerate(variants)
            if rows[k]
        ]
        return slice_fedavg(base, slices, self.scenario.compression.payload == "delta")

    def members(
        self, base: torch.Tensor, updates: list[Update]
    ) -> list[tuple[nn.Module, torch.Tensor]]:
        """The model each of ``updates`` stands for, received as ``base``, with the network
        that runs it: the full model for an edge's update, a device's variant for its own."""
        delta = self.scenario.compression.payload == "delta"
        if self.family is None:
            rows = self.decode([u.payload for u in updates], self.space)
            return [(self.model, row) for row in (base + rows if delta else rows)]
        found = []
        for update in updates:
            whole = update.variant_samples is not None
            variant = None if whole else self.family.variants[self.variant_of[update.sender]]
            space = self.space if whole else variant.space
            row = self.decode([update.payload], space)[0]
            start = base if whole else base[variant.index]
            found.append((self.model if whole else variant.model, start + row if delta else row))
        return found


def tier_column(width: float) -> str:
    """The rounds.csv column of a variant's test accuracy.

    >>> tier_column(0.25), tier_column(1.0)
    ('accuracy_w0.25', 'accuracy_w1')
    """
    return f"accuracy_w{width:g}"


def prepare(
    scenario: Scenario,
    selection: Selection | None = None,
    codec: UpdateCodec | None = None,
) -> Simulation:
    """Check the scenario against the model and fleet, then build the whole simulation.

    ``selection`` and ``codec`` replace the scenario's policy and codec with Python objects.
    """
    seed = scenario.seed
    input_shape, num_classes = data_shape(scenario.data)
    model_seed = int(np.random.SeedSequence([seed, STREAM_MODEL]).generate_state(1)[0])
    builtin = scenario.model.name if scenario.model.name in MODEL_NAMES else None
    cache_key = builtin and f"{builtin}|{num_classes}"
    family = None
    if scenario.model.variants is not None:
        family = build_family(scenario.model.name, input_shape, num_classes, model_seed,
                              scenario.model.variants, cache_key)
        model, stats = family.full.model, family.full.stats
    else:
        model = build_model(scenario.model.name, input_shape, num_classes, model_seed)
        stats = model_stats(model, input_shape, cache_key)
    check_memory(scenario, input_elements(input_shape), stats.n_params)
    topo = build_topology(scenario)
    data_rng = np.random.default_rng([seed, STREAM_DATA])
    samples = draw_sample_counts(scenario.data, len(topo.names), data_rng)
    compression = scenario.compression
    needed = train_bytes(stats.n_params, scenario.run.batch_size, stats.activations_per_sample,
                         compression.error_feedback)
    fleet, battery = Fleet.build(scenario, topo, samples, needed)
    variant_of = None
    if family is not None:
        variant_of = _assign(scenario, topo, family, fleet)
        fleet.fits = variant_of >= 0
    elif not fleet.fits.any():
        raise ModelDoesNotFitError(
            f"model.name: {scenario.model.name!r} needs {needed} bytes to train "
            f"(batch_size {scenario.run.batch_size}) and fits no device "
            f"(largest memory_kb: {max(scenario.profile(p).memory_kb for p in topo.profile_names)})"
        )
    space = ParamSpace.of(model)
    run = scenario.run
    trainer = data = None
    if run.learning:
        if run.device == "cuda" and not torch.cuda.is_available():
            raise ScenarioError("run.device: 'cuda' requested but torch sees no CUDA device")
        data = make_data(scenario.data, samples, data_rng)
        settings = (run.local_epochs, run.batch_size, run.learning_rate, run.device,
                    scenario.aggregation.mu)
        trainer = (
            make_trainer(model, data, *settings)
            if family is None
            else FamilyTrainer(family, variant_of, data, *settings)
        )
    proxy = None
    if data is not None and scenario.distillation.enabled:
        proxy_rng = np.random.default_rng([seed, STREAM_DISTILL])
        proxy = proxy_inputs(data, scenario.distillation, proxy_rng)
    trace = Trace(string_index([CLOUD, *topo.edges]).append(topo.names))
    optimizers = build_optimizers(scenario, len(topo.edges), space.size)
    links = Links.build(scenario.topology, topo.edges)
    return Simulation(
        scenario=scenario,
        env=simpy.Environment(),
        topo=topo,
        links=links,
        link_log=LinkLog(links),
        fleet=fleet,
        battery=battery,
        trace=trace,
        stats=stats,
        space=space,
        codec=resolve_codec(
            Codec(compression.quantize, compression.prune_ratio, compression.cluster_bits,
                  compression.top_k),
            codec or compression.codec,
        ),
        policy=resolve_selection(selection or scenario.selection.policy),
        model=model,
        trainer=trainer,
        data=data,
        trained=np.zeros(len(topo.names), dtype=np.int64),
        busy=np.zeros(len(topo.names), dtype=bool),
        late=np.zeros(len(topo.names), dtype=np.int64),
        family=family,
        variant_of=variant_of,
        optimizers=optimizers,
        proxy=proxy,
        availability=Cursor(
            availability.build(scenario, topo.profile_of, topo.profile_names, topo.names),
            len(topo.names),
        ),
        history=RoundHistory.empty(len(topo.names)),
        reported_s=np.zeros(len(topo.names)),
        global_weights=space.vector(model) if run.learning else None,
    )


def _assign(scenario: Scenario, topo: Topology, family: ModelFamily, fleet: Fleet) -> np.ndarray:
    """Each device's widest variant within its memory (and compute budget); refuse a family
    with a variant that fits no device."""
    memory_kb = np.array(
        [scenario.profile(p).memory_kb for p in topo.profile_names], dtype=np.float64
    )[topo.profile_of]
    config, run = scenario.model, scenario.run
    budget = None
    if config.assign == "memory_and_time":
        budget = (fleet.samples, fleet.compute_mflops, run.local_epochs, config.compute_budget_s)
    fits = variant_fits(family, memory_kb, run.batch_size, budget)
    check_every_variant_fits(family, fits, run.batch_size, float(memory_kb.max()),
                             config.compute_budget_s if budget else None)
    return assign_variants(fits)


def build_optimizers(scenario: Scenario, edges: int, size: int) -> dict[int, Optimizer]:
    """A server optimiser for the cloud (node 0) and, when edges aggregate, one per edge."""
    settings = scenario.aggregation
    cloud_key, edge_key = "aggregation.cloud_optimizer", "aggregation.edge_optimizer"
    optimizers = {0: resolve_optimizer(settings.cloud_optimizer, cloud_key, settings, size)}
    if scenario.topology.mode == "hierarchical":
        for edge in range(edges):
            optimizers[1 + edge] = resolve_optimizer(
                settings.edge_optimizer, edge_key, settings, size
            )
    return optimizers
