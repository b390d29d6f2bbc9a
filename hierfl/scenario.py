"""Typed, frozen scenario models; TOML loading and ``--set`` overrides with one clear error."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hierfl.errors import ScenarioError
from hierfl.profiles import BUILTIN_PROFILES, Profile

_CUSTOM_NAME = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""A name that is one plain folder name on every system: no separator, no '..', no space."""
MODEL_NAMES = ("tiny", "compact", "mobile", "dscnn")
POLICY_NAMES = ("all", "random", "battery")
OPTIMIZER_NAMES = ("fedavg", "fedavgm", "fedadam")
DIRECTIONS = ("uplink_kbps", "downlink_kbps")  # a new bandwidth_kbps replaces a built-in's
AssignRule = Literal["round_robin", "block", "interleave", "random"]
ASSIGN_RULES = get_args(AssignRule)
RESERVED_PROFILE = "edge"  # device names are profile-number, edge servers are edge-number


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class RunConfig(_Frozen):
    """How long to run and how each device trains."""

    cloud_rounds: int = Field(30, ge=1, description="cloud aggregations in the run")
    edge_rounds: int = Field(1, ge=1, description="edge aggregations per cloud round")
    local_epochs: int = Field(2, ge=1, description="passes over local data per edge round")
    batch_size: int = Field(8, ge=1, description="minibatch size, samples")
    learning_rate: float = Field(0.01, gt=0, description="local SGD step size")
    target_accuracy: float | None = Field(
        None, gt=0, le=1, description="report time and energy to reach this test accuracy"
    )
    learning: bool = Field(True, description="false: timing-only, no training and no accuracy")
    device: Literal["cpu", "cuda"] = Field("cpu", description="where the training backend runs")


class DataConfig(_Frozen):
    """Where each device's samples come from and how labels spread over devices."""

    kind: Literal["synthetic", "seed", "digits", "npz"] = Field(
        "synthetic",
        description="synthetic: learnable Gaussians; seed: random labels; "
        "digits: scikit-learn 8x8 digits; npz: your own arrays",
    )
    input_dim: int = Field(32, ge=1, description="features per sample (synthetic, seed)")
    num_classes: int = Field(10, ge=2, description="number of labels (synthetic, seed)")
    samples_per_device: tuple[int, int] = Field(
        (20, 80), description="uniform integer range of local samples, inclusive"
    )
    partition: Literal["iid", "dirichlet"] = Field("iid", description="label spread over devices")
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (partition = dirichlet)")
    test_samples: int = Field(2000, ge=1, description="held-out global test set size")
    class_sep: float = Field(0.8, gt=0, description="distance scale of class means (synthetic)")
    feature_shift: float = Field(
        0.1, description="device i adds i * feature_shift to its features (as in the seed)"
    )
    path: str | None = Field(
        None,
        description="npz file with x, y (and x_test, y_test); relative to the scenario file",
    )
    allow_reuse: bool = Field(
        False,
        description="digits, npz: let devices share samples when the fleet asks for more "
        "than the pool holds (otherwise that is an error)",
    )

    @field_validator("samples_per_device", mode="before")
    @classmethod
    def _range(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return (value, value)
        return tuple(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        low, high = self.samples_per_device
        if not 1 <= low <= high:
            raise ValueError(
                f"samples_per_device must be [low, high] with 1 <= low <= high: [{low}, {high}]"
            )
        if self.kind == "npz" and self.path is None:
            raise ValueError("path is required when kind = 'npz'")
        return self


class ModelConfig(_Frozen):
    """Which network every device trains."""

    name: str = Field(
        "compact", description="tiny | compact | mobile | dscnn | 'package.module:Class'"
    )

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in MODEL_NAMES and not _CUSTOM_NAME.match(value):
            raise ValueError(
                f"unknown model {value!r} (allowed: {', '.join(MODEL_NAMES)}, "
                "or 'package.module:Class')"
            )
        return value

    variants: tuple[float, ...] | None = Field(
        None,
        description="width multipliers of a HeteroFL family, e.g. [1, 0.5, 0.25, 0.125]: "
        "each device trains the widest that fits (unset: one model for all)",
    )
    assign: Literal["memory", "memory_and_time"] = Field(
        "memory",
        description="what a device's variant must fit: its memory, or also "
        "compute_budget_s (variants only)",
    )
    compute_budget_s: float | None = Field(
        None,
        gt=0,
        description="per-round local-training budget, s at the profile's compute_mflops "
        "(assign = memory_and_time)",
    )

    @field_validator("variants", mode="before")
    @classmethod
    def _variant_list(cls, value: Any) -> Any:
        if isinstance(value, list):
            return tuple(float(v) if type(v) is int else v for v in value)
        return value

    @field_validator("variants")
    @classmethod
    def _widths(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is None:
            return value
        if not value or any(not 0 < width <= 1 for width in value):
            raise ValueError(f"must be a non-empty list of widths in (0, 1]: {list(value)}")
        if len(set(value)) != len(value):
            raise ValueError(f"must not repeat a width: {list(value)}")
        return value

    @model_validator(mode="after")
    def _budget_given(self) -> ModelConfig:
        if self.assign == "memory_and_time" and self.compute_budget_s is None:
            raise ValueError("compute_budget_s is required when assign = 'memory_and_time'")
        if self.assign == "memory_and_time" and self.variants is None:
            raise ValueError("assign = 'memory_and_time' needs variants")
        return self


class CompressionConfig(_Frozen):
    """How updates are encoded on the uplink."""

    quantize: Literal["none", "int8"] = Field("none", description="none | int8 (affine per tensor)")
    prune_ratio: float = Field(
        0.0, ge=0, lt=1, description="fraction of weights zeroed by magnitude"
    )
    payload: Literal["delta", "weights"] = Field(
        "delta", description="delta: trained minus received; weights: as the seed sends"
    )
    codec: str | None = Field(
        None, description="'package.module:Name' of your own codec (replaces quantize, prune)"
    )

    @field_validator("codec")
    @classmethod
    def _importable_name(cls, value: str | None) -> str | None:
        if value is not None and not _CUSTOM_NAME.match(value):
            raise ValueError(f"codec must be 'package.module:Name': {value!r}")
        return value


class SelectionConfig(_Frozen):
    """Which devices each edge asks to train in an edge round."""

    policy: str = Field("all", description="all | random | battery (highest battery first)")
    fraction: float = Field(1.0, gt=0, le=1, description="share of eligible devices selected")
    min_battery: float = Field(
        0.1, ge=0, le=1, description="devices below this battery fraction are not selected"
    )

    @field_validator("policy")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in POLICY_NAMES and not _CUSTOM_NAME.match(value):
            raise ValueError(
                f"unknown policy {value!r} (allowed: {', '.join(POLICY_NAMES)}, "
                "or 'package.module:function')"
            )
        return value


class AggregationConfig(_Frozen):
    """How aggregators turn the averaged update into their next model, and the local objective."""

    edge_optimizer: str = Field(
        "fedavg",
        description="server optimiser of every edge aggregation: fedavg | fedavgm | fedadam | "
        "'package.module:Name'",
    )
    cloud_optimizer: str = Field(
        "fedavg",
        description="server optimiser of the cloud aggregation: fedavg | fedavgm | fedadam | "
        "'package.module:Name'",
    )
    server_lr: float = Field(
        1.0, gt=0, description="server step size on the averaged delta (1: plain FedAvg)"
    )
    server_momentum: float = Field(0.9, ge=0, lt=1, description="fedavgm: momentum of the delta")
    beta1: float = Field(0.9, ge=0, lt=1, description="fedadam: decay of the first moment")
    beta2: float = Field(0.99, ge=0, lt=1, description="fedadam: decay of the second moment")
    tau: float = Field(1e-3, gt=0, description="fedadam: adaptivity (added to the root of v)")
    mu: float = Field(
        0.0, ge=0, description="FedProx: weight of (mu/2)||w - w_received||^2 in local training"
    )

    @field_validator("edge_optimizer", "cloud_optimizer")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in OPTIMIZER_NAMES and not _CUSTOM_NAME.match(value):
            raise ValueError(
                f"unknown optimiser {value!r} (allowed: {', '.join(OPTIMIZER_NAMES)}, "
                "or 'package.module:Name')"
            )
        return value


class DistillationConfig(_Frozen):
    """FedDF: after each cloud aggregation, distil the ensemble of arrived models into it."""

    enabled: bool = Field(False, description="distil at the cloud after every cloud aggregation")
    proxy: Literal["pool", "noise"] = Field(
        "pool",
        description="unlabelled proxy inputs: pool: a seeded draw from the devices' training "
        "inputs, labels unused; noise: standard normal inputs shaped like the data",
    )
    proxy_samples: int = Field(256, ge=1, description="proxy inputs, drawn once per run")
    steps: int = Field(50, ge=1, description="Adam steps per distillation")
    batch_size: int = Field(64, ge=1, description="proxy inputs per step, samples")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of teacher and student")
    learning_rate: float = Field(1e-3, gt=0, description="Adam step size of the student")


class LinkConfig(_Frozen):
    """One network link; as the backhaul, a key a table leaves out keeps its default."""

    # defaults are the backhaul's, so a partial table or override changes only what it names
    bandwidth_kbps: float = Field(100_000.0, gt=0, description="10^3 bit/s")
    latency_ms: float = Field(20.0, ge=0, description="one-way latency, ms")


class SharedLinkConfig(LinkConfig):
    """A link that many flows share (cell, core): `bandwidth_kbps` is required, no default."""

    # a cell or core link has no sensible default capacity; its latency adds to the path's
    bandwidth_kbps: float = Field(gt=0, description="10^3 bit/s")
    latency_ms: float = Field(0.0, ge=0, description="one-way latency added to the path, ms")


ONE_TABLE, PER_EDGE = "one_table", "per_edge"  # how a link key is given; pydantic puts it in loc
PER_EDGE_KEYS = ("backhaul", "cell")


def _per_edge_shape(value: Any) -> str:
    return PER_EDGE if isinstance(value, list | tuple) else ONE_TABLE


Backhaul = Annotated[
    Annotated[LinkConfig, Tag(ONE_TABLE)] | Annotated[tuple[LinkConfig, ...], Tag(PER_EDGE)],
    Discriminator(_per_edge_shape),
]
Cell = Annotated[
    Annotated[SharedLinkConfig, Tag(ONE_TABLE)]
    | Annotated[tuple[SharedLinkConfig, ...], Tag(PER_EDGE)],
    Discriminator(_per_edge_shape),
]


class TopologyConfig(_Frozen):
    """Edges, their links and how devices hang below them."""

    mode: Literal["hierarchical", "cloud_only"] = Field(
        "hierarchical", description="cloud_only: edges only relay; the cloud aggregates devices"
    )
    edges: int = Field(1, ge=0, description="edge servers (0 only with cloud_only)")
    assign: AssignRule | tuple[int, ...] = Field(
        "round_robin",
        description="round_robin: device i to edge i % edges; block: contiguous blocks; "
        "interleave: each profile dealt over the edges in turn (balances profiles); "
        "random: dealt in a seeded random order; or a list, the edge of each device in "
        "fleet order",
    )
    backhaul: Backhaul = Field(
        LinkConfig(), description="edge-to-cloud link: one table for every edge, or one per edge"
    )
    cell: Cell | None = Field(
        None,
        description="medium each edge's devices share with their edge server (Wi-Fi AP, LTE "
        "cell, LoRa gateway): one table for every edge, or one per edge; unset: none",
    )
    core: SharedLinkConfig | None = Field(
        None, description="one link at the cloud shared by every flow reaching it; unset: none"
    )
    edge_profile: str = Field("edge_server", description="profile of every edge server")
    cloud_profile: str = Field("edge_server", description="profile of the cloud aggregator")

    @field_validator("backhaul", "cell", mode="before")
    @classmethod
    def _list_as_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("backhaul", "cell")
    @classmethod
    def _one_per_edge(cls, value: Any, info: ValidationInfo) -> Any:
        edges = info.data.get("edges")
        if info.field_name == "cell" and value is not None and edges == 0:
            raise ValueError("a cell needs edges >= 1 (its devices share it with their edge): 0")
        if isinstance(value, tuple) and edges is not None and len(value) != edges:
            raise ValueError(
                f"a per-edge list needs one table per edge: {edges} wanted, {len(value)} given"
            )
        return value

    @field_validator("assign", mode="before")
    @classmethod
    def _rule_or_map(cls, value: Any) -> Any:
        if isinstance(value, list):
            return tuple(value)
        if not isinstance(value, str | tuple) or (
            isinstance(value, str) and value not in ASSIGN_RULES
        ):
            raise ValueError(
                f"unknown assignment {value!r} (allowed: {', '.join(ASSIGN_RULES)}, "
                "or a list of edge numbers, one per device)"
            )
        return value

    @field_validator("assign")
    @classmethod
    def _edges_exist(cls, value: Any, info: ValidationInfo) -> Any:
        edges = info.data.get("edges")
        if isinstance(value, tuple) and edges is not None:
            wrong = [e for e in value if not 0 <= e < edges]
            if wrong:
                raise ValueError(
                    f"every edge must be in [0, {edges - 1}] (topology.edges = {edges}): "
                    f"{wrong[0]}"
                )
        return value

    @model_validator(mode="after")
    def _check(self) -> TopologyConfig:
        if self.edges == 0 and self.mode == "hierarchical":
            raise ValueError("edges must be >= 1 when mode = 'hierarchical': 0")
        return self

    def backhaul_of(self, edge: int) -> LinkConfig:
        """The backhaul of edge ``edge`` (0-based): its own table, or the one shared table."""
        self._check_edge(edge)
        return self.backhaul[edge] if isinstance(self.backhaul, tuple) else self.backhaul

    def cell_of(self, edge: int) -> LinkConfig | None:
        """The cell of edge ``edge`` (0-based), or None when the scenario has no cell."""
        self._check_edge(edge)
        return self.cell[edge] if isinstance(self.cell, tuple) else self.cell

    def _check_edge(self, edge: int) -> None:
        if not 0 <= edge < self.edges:
            raise IndexError(f"edge must be in [0, {self.edges}): {edge}")


class VariabilityConfig(_Frozen):
    """Seeded per-device, per-cloud-round spread of compute speed and access bandwidth."""

    compute_sigma: float = Field(
        0.0, ge=0, description="lognormal sigma of the compute-speed multiplier (median 1)"
    )
    bandwidth_sigma: float = Field(
        0.0, ge=0, description="lognormal sigma of the access-bandwidth multiplier (median 1)"
    )


class DeviceGroup(_Frozen):
    """``count`` devices of one profile."""

    profile: str = Field(description="a built-in profile or one under [profiles]")
    count: int = Field(ge=1, description="number of devices")


class Scenario(_Frozen):
    """A whole experiment, as resolved from a TOML file and overrides."""

    name: str = Field(
        "scenario",
        description="names the run folder and the summary: letters, digits, '.', '_', '-' "
        "(starting with a letter or digit, at most 100 characters)",
    )
    seed: int = Field(0, ge=0, description="root of every random stream")
    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    compression: CompressionConfig = CompressionConfig()
    selection: SelectionConfig = SelectionConfig()
    topology: TopologyConfig = TopologyConfig()
    variability: VariabilityConfig = VariabilityConfig()
    aggregation: AggregationConfig = AggregationConfig()
    distillation: DistillationConfig = DistillationConfig()
    devices: tuple[DeviceGroup, ...] = Field(min_length=1, description="device groups")
    profiles: dict[str, Profile] = Field(default_factory=dict, description="define or override")

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        """The name becomes a folder (runs/NAME): nothing that could leave runs/."""
        if not SAFE_NAME.fullmatch(value):
            raise ValueError(
                "must be letters, digits, '.', '_' or '-', starting with a letter or "
                f"digit, at most 100 characters: {value!r}"
            )
        return value

    @field_validator("devices", mode="before")
    @classmethod
    def _devices(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("profiles", mode="before")
    @classmethod
    def _fill_builtin(cls, value: Any) -> Any:
        """A table under [profiles] named like a built-in only overrides the keys it gives."""
        if not isinstance(value, dict):
            return value
        filled = {}
        for name, table in value.items():
            base = BUILTIN_PROFILES.get(name)
            if base is not None and isinstance(table, dict):
                table = {**_inherited(base, table), **table, **_overridden_source(base, table)}
            filled[name] = table
        return filled

    @model_validator(mode="after")
    def _cloud_only_has_one_edge_round(self) -> Scenario:
        if self.topology.mode == "cloud_only" and self.run.edge_rounds != 1:
            raise ValueError(
                "run.edge_rounds: must be 1 when topology.mode = 'cloud_only': "
                f"{self.run.edge_rounds}"
            )
        return self

    @model_validator(mode="after")
    def _cloud_only_has_no_edge_optimizer(self) -> Scenario:
        optimizer = self.aggregation.edge_optimizer
        if self.topology.mode == "cloud_only" and optimizer != "fedavg":
            raise ValueError(
                "aggregation.edge_optimizer: cloud_only has no edge aggregation, so it must "
                f"be 'fedavg': {optimizer!r}"
            )
        return self

    @model_validator(mode="after")
    def _one_edge_per_device(self) -> Scenario:
        assign = self.topology.assign
        if isinstance(assign, tuple) and len(assign) != self.n_devices:
            raise ValueError(
                f"topology.assign: a list must give one edge per device ({self.n_devices} "
                f"devices): {len(assign)} entries"
            )
        return self

    @model_validator(mode="after")
    def _profiles_known(self) -> Scenario:
        known = {**BUILTIN_PROFILES, **self.profiles}
        allowed = ", ".join(sorted(known))
        for index, group in enumerate(self.devices):
            if group.profile not in known:
                raise ValueError(
                    f"devices[{index}].profile: unknown profile {group.profile!r} "
                    f"(allowed: {allowed})"
                )
            if group.profile == RESERVED_PROFILE:
                raise ValueError(
                    f"devices[{index}].profile: {RESERVED_PROFILE!r} is reserved: its devices' "
                    f"names would be the edge servers' ({RESERVED_PROFILE}-0, ...); rename it"
                )
        for key in ("edge_profile", "cloud_profile"):
            name = getattr(self.topology, key)
            if name not in known:
                raise ValueError(f"topology.{key}: unknown profile {name!r} (allowed: {allowed})")
        return self

    def profile(self, name: str) -> Profile:
        """The scenario's profile ``name``: its own definition first, then the built-in."""
        return self.profiles.get(name) or BUILTIN_PROFILES[name]

    @property
    def n_devices(self) -> int:
        """Devices in the fleet."""
        return sum(group.count for group in self.devices)

    def to_dict(self) -> dict[str, Any]:
        """The resolved scenario as plain TOML-like data (defaults filled in)."""
        return self.model_dump(mode="json", exclude_none=True)

    def with_overrides(self, assignments: list[str] | tuple[str, ...]) -> Scenario:
        """A copy with ``key.path=value`` assignments applied and validated again.

        A profile named like a built-in enters as its changes only, so an override of it
        acts as it would in the file (a new ``bandwidth_kbps`` sets both directions). A
        relative ``data.path`` among them is made absolute against the working directory.
        """
        raw = self.to_dict()
        raw["profiles"] = {name: _changes(name, p) for name, p in self.profiles.items()}
        return parse_scenario(anchor_paths(apply_overrides(raw, assignments), Path.cwd()))


def _overridden_source(base: Profile, table: dict[str, Any]) -> dict[str, Any]:
    """A new ``source`` when a table changes a built-in's figures and gives none of its own.

    The built-in's source no longer vouches for every figure: it says which it does not. A
    note written here before (a resolved scenario read again) is written anew.
    """
    note = f"{base.source} Overridden in the scenario: "
    if "source" in table and not str(table["source"]).startswith(note):
        return {}  # the scenario's own source
    changed = sorted(
        key for key, value in table.items()
        if key != "source" and getattr(base, key, None) != value
    )
    return {"source": note + ", ".join(changed) + "." if changed else base.source}


def _inherited(base: Profile, table: dict[str, Any]) -> dict[str, Any]:
    """The built-in's keys an override keeps: all, but a new ``bandwidth_kbps`` drops the
    built-in's ``uplink_kbps`` and ``downlink_kbps`` (it then sets both directions)."""
    kept = base.model_dump(exclude_none=True)
    if "bandwidth_kbps" in table:
        for key in DIRECTIONS:
            kept.pop(key, None)
    return kept


def _changes(name: str, profile: Profile) -> dict[str, Any]:
    """The table that, in a file, gives ``profile``: all of it, or what it changes in a built-in."""
    mine = profile.model_dump(mode="json")
    base = BUILTIN_PROFILES.get(name)
    if base is None:
        return {key: value for key, value in mine.items() if value is not None}
    theirs = base.model_dump(mode="json")
    changed = {key: value for key, value in mine.items() if value != theirs[key]}
    if any(mine[key] is None for key in DIRECTIONS if key in changed):
        changed["bandwidth_kbps"] = mine["bandwidth_kbps"]  # only a new bandwidth drops them
    if "bandwidth_kbps" in changed:
        changed.update({key: mine[key] for key in DIRECTIONS})
    return {key: value for key, value in changed.items() if value is not None}


def parse_scenario(raw: dict[str, Any], origin: str = "scenario") -> Scenario:
    """Validate plain data into a Scenario, or raise ScenarioError naming each bad key."""
    try:
        return Scenario.model_validate(raw)
    except ValidationError as error:
        errors = error.errors()
        deeper = {e["loc"][:1] for e in errors if len(e["loc"]) > 1}
        kept = [e for e in errors if not (e["type"] == "too_short" and e["loc"] in deeper)]
        raise ScenarioError([f"{origin}: {_describe(e)}" for e in kept]) from None


def load_scenario(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Read a TOML scenario file, apply ``key=value`` overrides, and validate it.

    A relative ``data.path`` in the file is relative to the file's folder; one given in an
    override, to the working directory. Both are stored absolute, so resume and sweeps find
    the file from anywhere.
    """
    raw = anchor_paths(apply_overrides(read_scenario_file(path), overrides), Path.cwd())
    return parse_scenario(raw, origin=str(path))


def read_scenario_file(path: str | Path) -> dict[str, Any]:
    """The plain data of a TOML scenario file, its relative ``data.path`` made absolute."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except OSError as error:
        raise ScenarioError(f"{path}: cannot read the scenario file: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ScenarioError(f"{path}: not valid TOML: {error}") from None
    return anchor_paths(raw, path.absolute().parent)


def anchor_paths(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A copy of ``raw`` whose relative ``data.path`` is made absolute against ``folder``.

    >>> anchor_paths({"data": {"path": "x.npz"}}, Path("/srv/study"))
    {'data': {'path': '/srv/study/x.npz'}}
    """
    data = raw.get("data")
    path = data.get("path") if isinstance(data, dict) else None
    if not isinstance(path, str) or not path or Path(path).is_absolute():
        return raw
    return {**raw, "data": {**data, "path": os.path.normpath(folder / path)}}


def apply_overrides(
    raw: dict[str, Any], assignments: list[str] | tuple[str, ...]
) -> dict[str, Any]:
    """Set ``a.b.c=value`` paths in a copy of ``raw``; values are TOML literals or bare strings.

    A number indexes an array of tables: ``devices.0.count=5`` sets the first group's count,
    and the index one past the end (``devices.2.profile=mcu``) adds a group.

    >>> apply_overrides({"devices": [{"profile": "mcu", "count": 2}]}, ["devices.0.count=5"])
    {'devices': [{'profile': 'mcu', 'count': 5}]}
    """
    result = _deep_copy(raw)
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ScenarioError(f"--set {assignment!r}: expected KEY.PATH=VALUE")
        node: dict[str, Any] | list[Any] = result
        for depth, part in enumerate(parts[:-1]):
            slot = _slot(node, parts, depth, assignment)
            if isinstance(node, dict):
                node.setdefault(slot, {})
            node = node[slot]
            if not isinstance(node, dict | list):
                raise ScenarioError(f"--set {assignment!r}: {part!r} is not a table")
        node[_slot(node, parts, len(parts) - 1, assignment)] = _literal(text.strip())
    return result


def _slot(node: dict | list, parts: list[str], depth: int, assignment: str) -> Any:
    """The key (in a table) or index (in an array) that ``parts[depth]`` names in ``node``.

    An index one past an array's end appends an empty table there first.
    """
    part = parts[depth]
    if isinstance(node, dict):
        return part
    n = len(node)
    if not (part.isascii() and part.isdecimal()) or int(part) > n:
        raise ScenarioError(
            f"--set {assignment!r}: {'.'.join(parts[:depth])!r} is an array of {n} tables, "
            f"not a table: give an index from 0 to {n} ({n} adds one): {part!r}"
        )
    if int(part) == n:
        node.append({})
    return int(part)


def _literal(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _deep_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_deep_copy(item) for item in value]
    return value


_BOUNDS = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}


def _key_path(loc: list[Any]) -> str:
    """``a.b[0].c``; a key that is not a plain name is quoted, so messages stay one line.

    >>> _key_path(["devices", 0, "count"]), _key_path(["run", "a b\\n"])
    ('devices[0].count', "run.'a b\\\\n'")
    """
    parts = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            name = str(part)
            parts.append("." + (name if re.fullmatch(r"[\w-]+", name) else repr(name)))
    return "".join(parts).lstrip(".")


def _user_loc(loc: tuple[Any, ...]) -> list[Any]:
    """The key path as the user wrote it: without pydantic's validator and union-shape parts.

    >>> _user_loc(("topology", "cell", "one_table", "bandwidth_kbps"))
    ['topology', 'cell', 'bandwidth_kbps']
    """
    kept: list[Any] = []
    for part in loc:
        after_link_key = bool(kept) and kept[-1] in PER_EDGE_KEYS
        if str(part).startswith("function-") or (after_link_key and part in (ONE_TABLE, PER_EDGE)):
            continue
        kept.append(part)
    return kept


def _describe(error: dict[str, Any]) -> str:
    """One line for one pydantic error: key path, rule, value."""
    loc = _user_loc(error["loc"])
    path = _key_path(loc)
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        where = _key_path(loc[:-1]) or "top level"
        return f"unknown key {path} in {where} (allowed: {', '.join(allowed)})"
    if error["type"] == "too_short":
        return f"{path}: needs at least {error['ctx']['min_length']} entry: {error['input']!r}"
    if error["type"] == "missing":
        return f"{path}: required key is missing"
    value = error.get("input")
    bound = _BOUNDS.get(error["type"])
    if bound is not None:
        limit = error["ctx"][bound[1]]
        return f"{path}: must be {bound[0]} {limit}: {value!r}"
    message = error["msg"].removeprefix("Value error, ")
    hidden = error["type"] == "value_error" or isinstance(value, dict)
    shown = "" if hidden else f" (got {value!r})"
    return f"{path}: {message}{shown}" if path else f"{message}{shown}"


def _allowed_keys(loc: list[Any]) -> list[str]:
    """The keys the model at ``loc`` accepts (profiles tables are Profile models)."""
    model: type[BaseModel] = Scenario
    for part in loc:
        if isinstance(part, int) or model is Profile:  # a profile's name is a key, not a field
            continue
        model = nested_model(model.model_fields[part].annotation) or model
    return list(model.model_fields)


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds: itself, or inside an optional, a union, a tuple or a dict.

    >>> nested_model(Scenario.model_fields["devices"].annotation).__name__, nested_model(int)
    ('DeviceGroup', None)
    >>> nested_model(TopologyConfig.model_fields["cell"].annotation).__name__
    'SharedLinkConfig'
    """
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = nested_model(arg)
        if found is not None:
            return found
    return None
