"""Codecs that encode update tensors to the real bytes a node sends, and decode them back.

Simulated payload sizes are ``len()`` of these bytes, so the byte layout below is the contract
(docs/concepts.md, "Payload bytes"): tensors one after another in model order, no header, no tags;
the receiver knows the shapes and the codec, so it can compute every tensor's layout.
All multi-byte numbers are little-endian.

- dense float32: 4 bytes per element.
- int8 affine: float32 scale, float32 offset, then one uint8 per element.
- clustered (``cluster_bits = b``): a codebook of ``2**b`` float32 centroids, then one b-bit
  centroid index per element, most significant bit first, packed one after another
  (``np.packbits``; the last byte padded with zeros): ``4 * 2**b + ceil(n * b / 8)`` bytes.
  A tensor for which that is not smaller than float32 (fewer elements than centroids, or
  about) travels as float32.
- pruned tensor (magnitude pruning of weight tensors at ``prune_ratio``, or ``top_k`` of every
  tensor): sent sparse (packbits bitmap of ``ceil(n/8)`` bytes, then the kept values in
  flat-index order, in the value format above) when that is smaller than dense.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple, Protocol

import numpy as np
import torch

from hierfl.errors import ScenarioError
from hierfl.plugins import load_object

TensorSpec = tuple[str, tuple[int, ...]]

QUANTIZERS = ("none", "int8")
MAX_CLUSTER_BITS = 8
_F32 = np.dtype("<f4")
_INT8_LEVELS = 255
_AFFINE_BYTES = 8  # float32 scale + float32 offset
_LLOYD_ITERATIONS = 100  # bounds k-means; one-dimensional Lloyd's converges in far fewer


def is_prunable(name: str, shape: tuple[int, ...]) -> bool:
    """Whether magnitude pruning applies: a weight tensor (name ends with 'weight', ndim >= 2).

    >>> is_prunable("fc.weight", (64, 32)), is_prunable("fc.bias", (64,))
    (True, False)
    """
    return name.endswith("weight") and len(shape) >= 2


def specs_of(tensors: Mapping[str, torch.Tensor]) -> list[TensorSpec]:
    """The (name, shape) of each tensor, in mapping order: what a receiver needs to decode."""
    return [(name, tuple(tensor.shape)) for name, tensor in tensors.items()]


class _Layout(NamedTuple):
    """How one tensor of ``n`` elements travels: ``k`` values kept, sparse or not, in bytes."""

    n: int
    k: int
    sparse: bool
    nbytes: int


@dataclass(frozen=True)
class Codec:
    """How an update is encoded: value format (``quantize``, or ``cluster_bits``) and which
    values travel (magnitude ``prune_ratio`` of weight tensors, or ``top_k`` of every tensor).

    >>> Codec(quantize="int8").payload_bytes([("fc.weight", (64, 32)), ("fc.bias", (64,))])
    2128
    >>> Codec(cluster_bits=4).payload_bytes([("fc.weight", (64, 32)), ("fc.bias", (64,))])
    1184
    """

    quantize: str = "none"
    prune_ratio: float = 0.0
    cluster_bits: int | None = None
    top_k: float = 1.0

    def __post_init__(self) -> None:
        if self.quantize not in QUANTIZERS:
            raise ValueError(f"'quantize' must be one of {QUANTIZERS}: {self.quantize!r}")
        if not 0.0 <= self.prune_ratio < 1.0:
            raise ValueError(f"'prune_ratio' must be >= 0 and < 1: {self.prune_ratio!r}")
        bits = self.cluster_bits
        if bits is not None and (type(bits) is not int or not 1 <= bits <= MAX_CLUSTER_BITS):
            raise ValueError(f"'cluster_bits' must be in 1..{MAX_CLUSTER_BITS}: {bits!r}")
        if bits is not None and self.quantize != "none":
            raise ValueError(f"'cluster_bits' replaces 'quantize', which must be 'none': "
                             f"{self.quantize!r}")
        if not 0.0 < self.top_k <= 1.0:
            raise ValueError(f"'top_k' must be > 0 and <= 1: {self.top_k!r}")
        if self.top_k < 1 and self.prune_ratio > 0:
            raise ValueError(f"'top_k' and 'prune_ratio' exclude each other: "
                             f"top_k {self.top_k!r}, prune_ratio {self.prune_ratio!r}")

    def kept(self, n: int, prunable: bool) -> int:
        """Elements kept out of ``n``: ``ceil(n * top_k)`` of any tensor with ``top_k < 1``;
        ``n - floor(n * prune_ratio)`` of a prunable one; else ``n``.

        >>> Codec(top_k=0.1).kept(2048, False), Codec(prune_ratio=0.3).kept(2048, True)
        (205, 1434)
        """
        if self.top_k < 1:
            return math.ceil(n * self.top_k)
        if prunable and self.prune_ratio > 0:
            return n - math.floor(n * self.prune_ratio)
        return n

    def payload_bytes(self, specs: Sequence[TensorSpec]) -> int:
        """Bytes of ``encode`` for tensors of these shapes, whatever their values."""
        return sum(self._layout(name, shape).nbytes for name, shape in specs)

    def encode(self, tensors: Mapping[str, torch.Tensor]) -> bytes:
        """The payload for these tensors, in mapping order."""
        flat = [t.detach().to("cpu", torch.float32).reshape(-1).numpy() for t in tensors.values()]
        row = np.concatenate(flat) if flat else np.zeros(0, np.float32)
        return self.encode_rows(row[None], specs_of(tensors))[0]

    def decode(self, payload: bytes, specs: Sequence[TensorSpec]) -> dict[str, torch.Tensor]:
        """Float32 tensors of the spec shapes, keyed by name in spec order."""
        row = torch.from_numpy(self.decode_rows([payload], specs)[0])
        sizes = [math.prod(shape) for _, shape in specs]
        parts = torch.split(row, sizes) if specs else []
        return {name: part.reshape(shape) for (name, shape), part in zip(specs, parts, strict=True)}

    def encode_rows(self, rows: np.ndarray, specs: Sequence[TensorSpec]) -> list[bytes]:
        """The payloads of several updates at once, byte for byte what ``encode`` writes.

        ``rows[i]`` is update i: its tensors flattened one after another in spec order.
        """
        rows = np.asarray(rows, dtype=np.float32)
        out = np.empty((len(rows), self.payload_bytes(specs)), np.uint8)
        for (name, shape), read, written in self._spans(specs):
            layout = self._layout(name, shape)
            out[:, written] = self._encode_block(rows[:, read], layout, name)
        return [row.tobytes() for row in out]

    def decode_rows(self, payloads: Sequence[bytes], specs: Sequence[TensorSpec]) -> np.ndarray:
        """The updates of several payloads, as one float32 row each (tensors in spec order)."""
        expected = self.payload_bytes(specs)
        for payload in payloads:
            if len(payload) != expected:
                raise ValueError(f"payload has {len(payload)} bytes, {self} expects {expected}")
        raw = np.frombuffer(b"".join(payloads), np.uint8).reshape(len(payloads), expected)
        size = sum(math.prod(shape) for _, shape in specs)
        rows = np.empty((len(payloads), size), np.float32)
        for (name, shape), written, read in self._spans(specs):
            rows[:, written] = self._decode_block(raw[:, read], self._layout(name, shape))
        return rows

    def _spans(self, specs: Sequence[TensorSpec]) -> list[tuple[TensorSpec, slice, slice]]:
        """Each tensor's spec, its columns in a flat row, and its bytes in a payload."""
        spans, element, byte = [], 0, 0
        for name, shape in specs:
            layout = self._layout(name, shape)
            spans.append(((name, shape), slice(element, element + layout.n),
                          slice(byte, byte + layout.nbytes)))
            element, byte = element + layout.n, byte + layout.nbytes
        return spans

    def _value_bytes(self, count: int) -> int:
        """Bytes of ``count`` values in this codec's value format."""
        if self.quantize == "int8":
            return count + _AFFINE_BYTES
        if self._clustered(count):
            return clustered_bytes(count, self.cluster_bits)
        return 4 * count

    def _clustered(self, count: int) -> bool:
        """Whether ``count`` values travel clustered: codebook and indices beat float32."""
        bits = self.cluster_bits
        return bits is not None and clustered_bytes(count, bits) < 4 * count

    def _layout(self, name: str, shape: tuple[int, ...]) -> _Layout:
        return _layout_of(self, name, tuple(shape))

    def _encode_block(self, block: np.ndarray, layout: _Layout, name: str) -> np.ndarray:
        """One tensor of every row (``block[i]``, flat) as its bytes, a uint8 row each."""
        if layout.k == layout.n:
            return self._encode_values(block, name)
        keep = _top_k_mask(block, layout.k)
        if layout.sparse:
            kept = block[keep].reshape(len(block), layout.k)
            return np.hstack([np.packbits(keep, axis=1), self._encode_values(kept, name)])
        return self._encode_values(np.where(keep, block, np.float32(0)), name)

    def _encode_values(self, values: np.ndarray, name: str) -> np.ndarray:
        if self.quantize == "int8":
            return _encode_int8(values, name)
        if self._clustered(values.shape[1]):
            return _encode_clusters(values, self.cluster_bits, name)
        return _as_bytes(values.astype(_F32))

    def _decode_block(self, chunk: np.ndarray, layout: _Layout) -> np.ndarray:
        """Float32 values of one tensor of every row from its bytes (``chunk[i]``)."""
        if not layout.sparse:
            return self._decode_values(chunk, layout.n)
        bitmap_bytes = math.ceil(layout.n / 8)
        keep = np.unpackbits(chunk[:, :bitmap_bytes], axis=1, count=layout.n).astype(bool)
        marked = np.count_nonzero(keep, axis=1)
        if (marked != layout.k).any():
            wrong = int(marked[marked != layout.k][0])
            raise ValueError(f"bitmap marks {wrong} values, expected {layout.k}")
        values = np.zeros((len(chunk), layout.n), np.float32)
        values[keep] = self._decode_values(chunk[:, bitmap_bytes:], layout.k).reshape(-1)
        return values

    def _decode_values(self, chunk: np.ndarray, count: int) -> np.ndarray:
        if self.quantize == "int8":
            return _decode_int8(chunk)
        if self._clustered(count):
            return _decode_clusters(chunk, self.cluster_bits, count)
        return np.ascontiguousarray(chunk).view(_F32).astype(np.float32).reshape(len(chunk), count)


DENSE = Codec()


def _top_k_mask(rows: np.ndarray, k: int) -> np.ndarray:
    """Mask of the ``k`` largest ``|x|`` of each row, ties to the lower index (a stable argsort).

    A partition finds each row's k-th magnitude in linear time; a full sort is ~10x slower.
    """
    # fmax turns NaN magnitudes into -1: pruned first, as NaN sorts last in a stable argsort.
    magnitude = np.fmax(np.abs(rows), -1)
    n = rows.shape[1]
    threshold = np.partition(magnitude, n - k, axis=1)[:, n - k, None]
    keep = magnitude > threshold
    ties = magnitude == threshold
    short = k - np.count_nonzero(keep, axis=1, keepdims=True)
    return keep | (ties & (np.cumsum(ties, axis=1) <= short))


def _as_bytes(values: np.ndarray) -> np.ndarray:
    """The bytes of each row of ``values`` (little-endian), as a uint8 row."""
    values = np.ascontiguousarray(values)
    return values.view(np.uint8).reshape(len(values), values.shape[1] * values.itemsize)


def _affine(values: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Float32 (scale, offset) per row, mapping 0..255 onto [min, max] of the row."""
    if values.shape[1] == 0:
        return np.ones(len(values), _F32), np.zeros(len(values), _F32)
    low, high = values.min(axis=1), values.max(axis=1)
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, with the tensor's name
        scale = (high - low) / np.float32(_INT8_LEVELS)
    if not np.isfinite(scale).all():
        bad = int(np.flatnonzero(~np.isfinite(scale))[0])
        raise ValueError(
            f"int8 needs a finite range: tensor {name!r} spans [{low[bad]}, {high[bad]}]"
        )
    # A zero step (constant tensor, or a range that underflows) would divide by zero.
    return np.where(scale > 0, scale, np.float32(1)), low


def _encode_int8(values: np.ndarray, name: str) -> np.ndarray:
    """Scale, offset, then one uint8 per value: ``q = clamp(round((x - offset) / scale))``."""
    scale, offset = _affine(values, name)
    # q from the stored float32 scale and offset (in float64) keeps |error| <= scale / 2.
    steps = (values.astype(np.float64) - offset[:, None].astype(np.float64)) / scale[
        :, None
    ].astype(np.float64)
    q = np.clip(np.rint(steps), 0, _INT8_LEVELS).astype(np.uint8)
    return np.hstack([_as_bytes(np.stack([scale, offset], axis=1).astype(_F32)), q])


def _decode_int8(chunk: np.ndarray) -> np.ndarray:
    """Values ``q * scale + offset`` in float32, a row per payload."""
    scale, offset = np.ascontiguousarray(chunk[:, :_AFFINE_BYTES]).view(_F32).T
    q = chunk[:, _AFFINE_BYTES:]
    return q.astype(np.float32) * scale[:, None] + offset[:, None]


def clustered_bytes(count: int, bits: int) -> int:
    """Bytes of ``count`` clustered values: the float32 codebook, then b-bit indices.

    >>> clustered_bytes(2048, 4)
    1088
    """
    return 4 * 2**bits + math.ceil(count * bits / 8)


def kmeans_1d(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Float32 centroids (``k``, ascending) and each value's nearest one, by Lloyd's k-means.

    Deterministic: it starts from ``k`` centroids evenly spread over [min, max], so the mean
    squared error is at most that of the uniform grid, ``((max - min) / (2 (k - 1)))**2``.
    In one dimension a cluster is a run of the sorted values, so an iteration costs
    O(k log n) on their prefix sums.

    >>> centroids, nearest = kmeans_1d(np.array([0, 0.1, 0.9, 1, 5], np.float32), 2)
    >>> centroids.tolist(), nearest.tolist()
    ([0.5, 5.0], [0, 0, 0, 0, 1])
    """
    x = np.sort(values.astype(np.float64))
    centroids = np.linspace(x[0], x[-1], k)
    sums = np.concatenate([[0.0], np.cumsum(x)])
    cuts = None
    for _ in range(_LLOYD_ITERATIONS):
        inner = np.searchsorted(x, (centroids[:-1] + centroids[1:]) / 2, side="right")
        moved = np.concatenate([[0], inner, [len(x)]])
        if cuts is not None and np.array_equal(moved, cuts):
            break
        cuts = moved
        counts = np.diff(cuts)
        # an empty cluster keeps its centroid, which stays between its neighbours' cells
        centroids = np.where(counts > 0, np.diff(sums[cuts]) / np.maximum(counts, 1), centroids)
    codebook = centroids.astype(_F32)
    wide = codebook.astype(np.float64)
    nearest = np.searchsorted((wide[:-1] + wide[1:]) / 2, values.astype(np.float64), side="right")
    return codebook, nearest


def _encode_clusters(values: np.ndarray, bits: int, name: str) -> np.ndarray:
    """Codebook, then packed b-bit indices, for each row of ``values``."""
    if not np.isfinite(values).all():
        raise ValueError(f"clustering needs finite values: tensor {name!r} has inf or NaN")
    rows = [kmeans_1d(row, 2**bits) for row in values]
    codebooks = np.stack([codebook for codebook, _ in rows])
    indices = np.stack([nearest for _, nearest in rows])
    shifts = np.arange(bits - 1, -1, -1)
    index_bits = (indices[:, :, None] >> shifts) & 1
    packed = np.packbits(index_bits.reshape(len(values), -1).astype(np.uint8), axis=1)
    return np.hstack([_as_bytes(codebooks), packed])


def _decode_clusters(chunk: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Each row's values: its codebook looked up at its unpacked b-bit indices."""
    codebook_bytes = 4 * 2**bits
    codebooks = np.ascontiguousarray(chunk[:, :codebook_bytes]).view(_F32)
    index_bits = np.unpackbits(chunk[:, codebook_bytes:], axis=1, count=count * bits)
    weights = 1 << np.arange(bits - 1, -1, -1)
    indices = index_bits.reshape(len(chunk), count, bits).astype(np.int64) @ weights
    return np.take_along_axis(codebooks, indices, axis=1).astype(np.float32)


@lru_cache(maxsize=4096)
def _layout_of(codec: Codec, name: str, shape: tuple[int, ...]) -> _Layout:
    """How a tensor travels under ``codec`` (cached: every update of a run repeats it)."""
    n = math.prod(shape)
    k = codec.kept(n, is_prunable(name, shape))
    sparse_bytes = math.ceil(n / 8) + codec._value_bytes(k)
    sparse = k < n and sparse_bytes < codec._value_bytes(n)
    return _Layout(n, k, sparse, sparse_bytes if sparse else codec._value_bytes(n))


class UpdateCodec(Protocol):
    """What a custom codec provides: real bytes out, tensors back, and the size from shapes."""

    def encode(self, tensors: Mapping[str, torch.Tensor]) -> bytes: ...

    def decode(self, payload: bytes, specs: Sequence[TensorSpec]) -> dict[str, torch.Tensor]: ...

    def payload_bytes(self, specs: Sequence[TensorSpec]) -> int: ...


def resolve_codec(builtin: Codec, custom: str | UpdateCodec | None) -> UpdateCodec:
    """The scenario's codec: the ``builtin`` one, or ``package.module:Name`` (class or object)."""
    if custom is None:
        return builtin
    if not isinstance(custom, str):
        return custom
    found = load_object(custom, "compression.codec")
    codec = found() if isinstance(found, type) else found
    missing = [m for m in ("encode", "decode", "payload_bytes") if not hasattr(codec, m)]
    if missing:
        raise ScenarioError(f"compression.codec: {custom!r} lacks {', '.join(missing)}")
    return codec
