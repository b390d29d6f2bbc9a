"""Datasets and their partition over devices: synthetic Gaussians, the seed's noise, digits, npz,
and the real datasets of ``hierfl.learn.datasets`` (LEAF, MNIST, Fashion-MNIST, CIFAR-10,
MNIST-1D).

Every function draws only from the numpy Generator it is given, so the same configuration,
counts and generator state give identical tensors.
"""

from __future__ import annotations

import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hierfl.errors import ScenarioError
from hierfl.learn.datasets import (
    LEAF_KINDS,
    SHAPES,
    read_cifar10,
    read_idx_dataset,
    read_leaf,
    read_mnist1d,
)
from hierfl.scenario import DataConfig

__all__ = ["FederatedData", "data_shape", "draw_sample_counts", "make_data"]

Shape = tuple[int, ...]
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]
"""``x, y, x_test, y_test``; the test arrays may be absent."""
_TEST_SHARE = 0.3
"""At most this share of a real dataset is held out as the test set."""
_DIGITS = ((1, 8, 8), 10)


@dataclass(frozen=True)
class FederatedData:
    """Every device's samples in one tensor, device by device, and a global test set."""

    x: torch.Tensor
    """(N_total, *input_shape) float32: all devices' samples, device by device."""
    y: torch.Tensor
    """(N_total,) int64 labels."""
    offsets: np.ndarray
    """(n_devices + 1,) int64: device i owns ``x[offsets[i]:offsets[i + 1]]``."""
    x_test: torch.Tensor
    """(N_test, *input_shape) float32: held-out global test set."""
    y_test: torch.Tensor
    """(N_test,) int64 test labels."""
    input_shape: Shape
    num_classes: int

    def device_slice(self, i: int) -> slice:
        """The rows of ``x`` and ``y`` that device ``i`` owns."""
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    @property
    def n_devices(self) -> int:
        """Devices the data is partitioned over."""
        return len(self.offsets) - 1


def draw_sample_counts(cfg: DataConfig, n_devices: int, rng: np.random.Generator) -> np.ndarray:
    """Samples per device, int64, uniform in ``cfg.samples_per_device`` inclusive.

    Cheap enough for a million devices: no features are made. LEAF data (femnist,
    shakespeare) has its natural partition instead: device i takes user ``i mod users`` in
    file order, with that user's training samples.

    >>> cfg = DataConfig(samples_per_device=(20, 80))
    >>> counts = draw_sample_counts(cfg, 5, np.random.default_rng(0))
    >>> bool(((counts >= 20) & (counts <= 80)).all()), counts.dtype
    (True, dtype('int64'))
    """
    if cfg.kind in LEAF_KINDS:
        return read_leaf(cfg.kind, cfg.path).counts[_leaf_owners(cfg, n_devices)]
    low, high = cfg.samples_per_device
    return rng.integers(low, high, size=n_devices, dtype=np.int64, endpoint=True)


def _leaf_owners(cfg: DataConfig, n_devices: int) -> np.ndarray:
    """The LEAF user of each device, ``i mod users``; more devices than users is sharing."""
    users = len(read_leaf(cfg.kind, cfg.path).users)
    if n_devices > users and not cfg.allow_reuse:
        raise ScenarioError(
            f"data.allow_reuse: {n_devices:,} devices but the {cfg.kind} data has {users:,} "
            f"users, so devices would share users' samples (device i takes user i mod "
            f"{users:,}); set data.allow_reuse = true to accept that, or use fewer devices"
        )
    return np.arange(n_devices) % users


def data_shape(cfg: DataConfig) -> tuple[Shape, int]:
    """``(input_shape, num_classes)`` of ``cfg``'s data, without building it.

    >>> data_shape(DataConfig(kind="digits"))
    ((1, 8, 8), 10)
    """
    if cfg.kind in ("synthetic", "seed"):
        return (cfg.input_dim,), cfg.num_classes
    if cfg.kind == "digits":
        return _DIGITS
    if cfg.kind in SHAPES:
        return SHAPES[cfg.kind]
    x, y, _, y_test = _read_npz(cfg.path)
    return tuple(x.shape[1:]), _num_classes(y, y_test)


def make_data(cfg: DataConfig, counts: np.ndarray, rng: np.random.Generator) -> FederatedData:
    """Build ``counts[i]`` samples for each device i, and the global test set.

    ``synthetic`` and ``seed`` make features; ``digits`` and ``npz`` hand out real samples:
    devices get disjoint samples while the pool (of a class, under ``dirichlet``) suffices,
    otherwise each device draws on its own, so samples repeat across devices but not
    within one device (unless it asks for more than the pool holds). Real data keeps
    ``test_samples`` (at most 30%) aside as the test set, unless the npz file brings its own
    ``x_test`` and ``y_test``, which are used whole, as are the test sets of MNIST,
    Fashion-MNIST, CIFAR-10 and MNIST-1D. LEAF data gives each device its user's samples and
    draws ``test_samples`` of its test samples (all, if fewer) as the test set.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or len(counts) == 0 or (counts < 0).any():
        raise ValueError(f"counts must be a non-empty 1-D array of ints >= 0: {counts!r}")
    if cfg.kind == "synthetic":
        return _gaussians(cfg, counts, rng, cfg.class_sep)
    if cfg.kind == "seed":
        return _gaussians(cfg, counts, rng, 0.0)
    if cfg.kind == "digits":
        x, y = _load_digits()
        return _from_arrays(cfg, (x, y, None, None), _DIGITS[1], counts, rng)
    if cfg.kind in LEAF_KINDS:
        return _from_leaf(cfg, counts, rng)
    if cfg.kind in SHAPES:
        return _from_arrays(cfg, _read_real(cfg), SHAPES[cfg.kind][1], counts, rng)
    arrays = _read_npz(cfg.path)
    return _from_arrays(cfg, arrays, _num_classes(arrays[1], arrays[3]), counts, rng)


SHIFT_LEVELS = 20  # distinct device offsets, as many as the seed tutorial had devices


def _gaussians(
    cfg: DataConfig, counts: np.ndarray, rng: np.random.Generator, class_sep: float
) -> FederatedData:
    """Class-conditional Gaussians: class mean + N(0, I) + (device id mod 20) * feature_shift.

    The shift repeats every ``SHIFT_LEVELS`` devices: the seed's 20 devices get its
    0.0 ... 1.9 offsets, and large fleets stay learnable instead of drifting apart.

    Means are ``class_sep * N(0, I)``. With ``class_sep = 0`` (kind ``seed``) the features say
    nothing about the labels: the seed tutorial's data, unlearnable (chance accuracy), kept
    for parity only. The test set has uniform labels and the shift of a uniformly drawn
    device, so it samples the population mixture.
    """
    k, d = cfg.num_classes, cfg.input_dim
    means = (class_sep * rng.standard_normal((k, d))).astype(np.float32)
    owner = np.repeat(np.arange(len(counts)), counts)
    y = _labels(cfg, counts, owner, rng)
    x = _features(means, y, owner, cfg.feature_shift, rng)
    y_test = rng.integers(0, k, size=cfg.test_samples)
    test_owner = rng.integers(0, len(counts), size=cfg.test_samples)
    x_test = _features(means, y_test, test_owner, cfg.feature_shift, rng)
    return FederatedData(
        x=torch.from_numpy(x),
        y=torch.from_numpy(y.astype(np.int64)),
        offsets=_offsets(counts),
        x_test=torch.from_numpy(x_test),
        y_test=torch.from_numpy(y_test.astype(np.int64)),
        input_shape=(d,),
        num_classes=k,
    )


def _features(
    means: np.ndarray, y: np.ndarray, owner: np.ndarray, shift: float, rng: np.random.Generator
) -> np.ndarray:
    """float32 ``means[y] + N(0, I) + (owner mod 20) * shift``, one row per sample."""
    noise = rng.standard_normal((len(y), means.shape[1]), dtype=np.float32)
    return means[y] + noise + ((owner % SHIFT_LEVELS) * shift).astype(np.float32)[:, None]


def _labels(
    cfg: DataConfig, counts: np.ndarray, owner: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Labels per sample: uniform (iid) or from the owner's Dirichlet(alpha) class mix."""
    k = cfg.num_classes
    if cfg.partition == "iid":
        return rng.integers(0, k, size=len(owner))
    mix = rng.dirichlet(np.full(k, cfg.alpha), size=len(counts))
    cdf = np.cumsum(mix, axis=1)
    u = rng.random(len(owner))
    return np.minimum((u[:, None] >= cdf[owner]).sum(axis=1), k - 1)


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64)


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (no download): pixels in [0, 1], shape (1797, 1, 8, 8)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ScenarioError(
            "data.kind: 'digits' needs scikit-learn: pip install 'hierfl[datasets]'"
        ) from None
    digits = load_digits()
    return (digits.images / 16.0)[:, None].astype(np.float32), digits.target.astype(np.int64)


def _from_arrays(
    cfg: DataConfig,
    arrays: Arrays,
    num_classes: int,
    counts: np.ndarray,
    rng: np.random.Generator,
) -> FederatedData:
    """Partition real samples over devices; hold out a test set if none is given."""
    x, y, x_test, y_test = arrays
    if x_test is None or y_test is None:
        n_test = min(cfg.test_samples, max(1, math.floor(_TEST_SHARE * len(x))))
        order = rng.permutation(len(x))
        x_test, y_test = x[order[:n_test]], y[order[:n_test]]
        x, y = x[order[n_test:]], y[order[n_test:]]
    picked = _partition(cfg, y, counts, rng)
    return FederatedData(
        x=torch.from_numpy(np.ascontiguousarray(x[picked], dtype=np.float32)),
        y=torch.from_numpy(y[picked].astype(np.int64)),
        offsets=_offsets(counts),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)),
        y_test=torch.from_numpy(y_test.astype(np.int64)),
        input_shape=tuple(x.shape[1:]),
        num_classes=num_classes,
    )


def _read_real(cfg: DataConfig) -> Arrays:
    """Train and test arrays of MNIST, Fashion-MNIST, CIFAR-10 or MNIST-1D."""
    if cfg.kind == "cifar10":
        return read_cifar10(cfg.path)
    if cfg.kind == "mnist1d":
        return read_mnist1d()
    return read_idx_dataset(cfg.kind, cfg.path)


def _from_leaf(cfg: DataConfig, counts: np.ndarray, rng: np.random.Generator) -> FederatedData:
    """Device i holds all training samples of user ``i mod users``; the test set is drawn."""
    leaf = read_leaf(cfg.kind, cfg.path)
    owners = _leaf_owners(cfg, len(counts))
    if not np.array_equal(leaf.counts[owners], counts):
        raise ValueError("counts must be the LEAF users' sample counts (draw_sample_counts)")
    test = np.arange(len(leaf.y_test))
    if len(test) > cfg.test_samples:
        test = np.sort(rng.choice(test, size=cfg.test_samples, replace=False))
    shape, classes = SHAPES[cfg.kind]
    x = [leaf.x[u] for u in owners]
    return FederatedData(
        x=torch.from_numpy(np.concatenate(x) if x else np.zeros((0, *shape), np.float32)),
        y=torch.from_numpy(np.concatenate([leaf.y[u] for u in owners])),
        offsets=_offsets(counts),
        x_test=torch.from_numpy(np.ascontiguousarray(leaf.x_test[test])),
        y_test=torch.from_numpy(leaf.y_test[test]),
        input_shape=shape,
        num_classes=classes,
    )


def _partition(
    cfg: DataConfig, y: np.ndarray, counts: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Indices into ``y``, device by device, shuffled within each device."""
    if cfg.partition == "iid":
        pools, demands = [np.arange(len(y))], counts[:, None]
    else:
        classes = np.unique(y)
        pools = [np.flatnonzero(y == c) for c in classes]
        mix = rng.dirichlet(np.full(len(classes), cfg.alpha), size=len(counts))
        demands = rng.multinomial(counts, mix)
    _check_reuse(cfg, [len(pool) for pool in pools], demands.sum(axis=0))
    devices = np.arange(len(counts))
    owners = np.concatenate([np.repeat(devices, column) for column in demands.T])
    picked = np.concatenate(
        [_assign(pool, column, rng) for pool, column in zip(pools, demands.T, strict=True)]
    )
    return picked[np.lexsort((rng.random(len(picked)), owners))]


def _check_reuse(cfg: DataConfig, pool_sizes: list[int], wanted: np.ndarray) -> None:
    """Refuse a fleet that asks a pool for more samples than it holds, unless allowed.

    ``wanted[c]`` samples are asked of pool c (one pool under iid, one per class under
    dirichlet); beyond a pool's size, devices would train on each other's samples.
    """
    short = int(np.maximum(np.asarray(wanted) - np.asarray(pool_sizes), 0).sum())
    if short and not cfg.allow_reuse:
        pools = "the pool holds" if len(pool_sizes) == 1 else "their classes' pools hold"
        raise ScenarioError(
            f"data.allow_reuse: the devices ask for {int(np.sum(wanted)):,} {cfg.kind} samples, "
            f"{short:,} more than {pools} ({sum(pool_sizes):,} after the test set), so "
            "devices would share samples; set data.allow_reuse = true to accept that, or "
            "lower data.samples_per_device or the device counts"
        )


def _assign(pool: np.ndarray, demands: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``demands[i]`` indices from ``pool`` for each device i, device by device.

    Disjoint across devices when the pool holds them all; otherwise each device draws on its
    own, without replacement unless it alone wants more than the pool holds.
    """
    total = int(demands.sum())
    if total <= len(pool):
        return rng.permutation(pool)[:total]
    draws = [rng.choice(pool, size=d, replace=d > len(pool)) for d in demands if d]
    return np.concatenate(draws)


MAX_CLASSES = 100_000
"""Labels must be below this: the model's output layer has one unit per class."""
_NUMERIC_KINDS = "biuf"
"""numpy dtype kinds features may have: bool, signed and unsigned integers, floats."""
_DAMAGED = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    MemoryError,
    NotImplementedError,
    OverflowError,
    RuntimeError,
    SyntaxError,
    struct.error,
    zipfile.BadZipFile,
    zlib.error,
)
"""What numpy and zipfile raise on a damaged npz: truncated, flipped bytes, odd headers."""


def _read_npz(path: str | None) -> Arrays:
    """``x, y, x_test, y_test`` from an npz file (test arrays optional, but both or neither).

    Features come back as float32 and must be finite; labels are integers from 0 to
    ``MAX_CLASSES - 1``.
    """
    arrays = _load_npz(path)
    for key in ("x", "y"):
        if key not in arrays:
            raise ScenarioError(
                f"data.path: {str(path)!r} has no array {key!r} (has: {', '.join(arrays)})"
            )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ScenarioError(
            f"data.path: {str(path)!r} must hold both x_test and y_test, or neither"
        )
    x, y = _numeric_features(arrays["x"], "x", path), arrays["y"]
    _check_pair(x, y, "x", "y", path)
    if "x_test" not in arrays and len(x) < 2:
        raise ScenarioError(
            f"data.path: x needs >= 2 samples to hold out a test set: {len(x)} in {str(path)!r}"
        )
    if "x_test" not in arrays:
        return x, y, None, None
    x_test, y_test = _numeric_features(arrays["x_test"], "x_test", path), arrays["y_test"]
    _check_pair(x_test, y_test, "x_test", "y_test", path)
    if x_test.shape[1:] != x.shape[1:]:
        raise ScenarioError(
            f"data.path: x_test samples have shape {x_test.shape[1:]}, "
            f"x samples {x.shape[1:]}, in {str(path)!r}"
        )
    return x, y, x_test, y_test


def _load_npz(path: str | None) -> dict[str, np.ndarray]:
    """Every array of the npz file at ``path``, or one error line saying why it cannot be read."""
    file = Path(str(path))
    if not file.is_file():
        raise ScenarioError(f"data.path: no such npz file: {str(path)!r}")
    try:
        loaded = np.load(file, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it is a single .npy array, not an npz archive of x and y")
        with loaded as npz:
            return {key: npz[key] for key in npz.files}
    except _DAMAGED as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ScenarioError(f"data.path: cannot read {str(path)!r} as npz: {reason}") from None


def _numeric_features(x: np.ndarray, name: str, path: str | None) -> np.ndarray:
    """``x`` as float32, refused unless numeric and finite (NaN would train to NaN weights)."""
    where = f"in {str(path)!r}"
    if x.dtype.kind not in _NUMERIC_KINDS:
        raise ScenarioError(
            f"data.path: {name} must hold numbers (bool, int or float): dtype {x.dtype} {where}"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        as_float = x.astype(np.float32, copy=False)
    bad = int(np.count_nonzero(~np.isfinite(as_float)))
    if bad:
        raise ScenarioError(
            f"data.path: {name} must be finite: {bad} values are NaN, infinite or beyond "
            f"float32's range {where}"
        )
    return as_float


def _check_pair(x: np.ndarray, y: np.ndarray, x_name: str, y_name: str, path: str | None) -> None:
    where = f"in {str(path)!r}"
    if x.ndim < 2 or len(x) < 1 or 0 in x.shape[1:]:
        raise ScenarioError(
            f"data.path: {x_name} must have shape (N >= 1, features >= 1, ...): {x.shape} {where}"
        )
    if y.ndim != 1 or len(y) != len(x):
        raise ScenarioError(
            f"data.path: {y_name} must have shape ({len(x)},) to match {x_name}: {y.shape} {where}"
        )
    if y.dtype.kind not in "iu" or y.min() < 0:
        raise ScenarioError(f"data.path: {y_name} must hold integer labels >= 0: {y.dtype} {where}")
    if y.max() >= MAX_CLASSES:
        raise ScenarioError(
            f"data.path: {y_name} labels must be < {MAX_CLASSES:,} (one output unit per class; "
            f"map them to 0..K-1): {int(y.max())} {where}"
        )


def _num_classes(y: np.ndarray, y_test: np.ndarray | None) -> int:
    top = int(y.max()) if y_test is None else max(int(y.max()), int(y_test.max()))
    return top + 1
