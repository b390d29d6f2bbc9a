"""Codecs that encode update tensors to the real bytes a node sends, and decode them back.

Simulated payload sizes are ``len()`` of these bytes, so the byte layout below is the contract
(DESIGN.md, "Timing model"): tensors one after another in model order, no header, no tags;
the receiver knows the shapes and the codec, so it can compute every tensor's layout.
All multi-byte numbers are little-endian.

- dense float32: 4 bytes per element.
- int8 affine: float32 scale, float32 offset, then one uint8 per element.
- pruned weight tensor: sent sparse (packbits bitmap of ``ceil(n/8)`` bytes, then the kept
  values in flat-index order, in the value format above) when that is smaller than dense.
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
_F32 = np.dtype("<f4")
_INT8_LEVELS = 255
_AFFINE_BYTES = 8  # float32 scale + float32 offset


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
    """How an update is encoded: value format (``quantize``) and magnitude ``prune_ratio``.

    >>> Codec(quantize="int8").payload_bytes([("fc.weight", (64, 32)), ("fc.bias", (64,))])
    2128
    """

    quantize: str = "none"
    prune_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.quantize not in QUANTIZERS:
            raise ValueError(f"'quantize' must be one of {QUANTIZERS}: {self.quantize!r}")
        if not 0.0 <= self.prune_ratio < 1.0:
            raise ValueError(f"'prune_ratio' must be >= 0 and < 1: {self.prune_ratio!r}")

    def kept(self, n: int, prunable: bool) -> int:
        """Elements kept out of ``n``: ``n - floor(n * prune_ratio)`` if pruned, else ``n``."""
        if prunable and self.prune_ratio > 0:
            return n - math.floor(n * self.prune_ratio)
        return n

    def payload_bytes(self, specs: Sequence[TensorSpec]) -> int:
        """Bytes of ``encode`` for tensors of these shapes, whatever their values."""
        return sum(self._layout(name, shape).nbytes for name, shape in specs)

    def encode(self, tensors: Mapping[str, torch.Tensor]) -> bytes:
        """The payload for these tensors, in mapping order."""
        return b"".join(self._encode_tensor(name, tensor) for name, tensor in tensors.items())

    def decode(self, payload: bytes, specs: Sequence[TensorSpec]) -> dict[str, torch.Tensor]:
        """Float32 tensors of the spec shapes, keyed by name in spec order."""
        expected = self.payload_bytes(specs)
        if len(payload) != expected:
            raise ValueError(f"payload has {len(payload)} bytes, {self} expects {expected}")
        tensors, start = {}, 0
        for name, shape in specs:
            layout = self._layout(name, shape)
            chunk = payload[start : start + layout.nbytes]
            tensors[name] = torch.from_numpy(self._decode_tensor(chunk, layout)).reshape(shape)
            start += layout.nbytes
        return tensors

    def _value_bytes(self, count: int) -> int:
        """Bytes of ``count`` values in this codec's value format."""
        return count + _AFFINE_BYTES if self.quantize == "int8" else 4 * count

    def _layout(self, name: str, shape: tuple[int, ...]) -> _Layout:
        return _layout_of(self, name, tuple(shape))

    def _encode_tensor(self, name: str, tensor: torch.Tensor) -> bytes:
        flat = tensor.detach().to("cpu", torch.float32).reshape(-1).numpy()
        layout = self._layout(name, tuple(tensor.shape))
        if layout.k == layout.n:
            return self._encode_values(flat, name)
        keep = _top_k_mask(flat, layout.k)
        if layout.sparse:
            return np.packbits(keep).tobytes() + self._encode_values(flat[keep], name)
        return self._encode_values(np.where(keep, flat, np.float32(0)), name)

    def _encode_values(self, values: np.ndarray, name: str) -> bytes:
        if self.quantize == "int8":
            return _encode_int8(values, name)
        return values.astype(_F32).tobytes()

    def _decode_tensor(self, chunk: bytes, layout: _Layout) -> np.ndarray:
        if not layout.sparse:
            return self._decode_values(chunk)
        bitmap_bytes = math.ceil(layout.n / 8)
        bitmap = np.frombuffer(chunk, np.uint8, count=bitmap_bytes)
        keep = np.unpackbits(bitmap, count=layout.n).astype(bool)
        if np.count_nonzero(keep) != layout.k:
            raise ValueError(f"bitmap marks {np.count_nonzero(keep)} values, expected {layout.k}")
        values = np.zeros(layout.n, np.float32)
        values[keep] = self._decode_values(chunk[bitmap_bytes:])
        return values

    def _decode_values(self, chunk: bytes) -> np.ndarray:
        if self.quantize == "int8":
            return _decode_int8(chunk)
        return np.frombuffer(chunk, _F32).astype(np.float32)


DENSE = Codec()


def _top_k_mask(flat: np.ndarray, k: int) -> np.ndarray:
    """Mask of the ``k`` largest ``|x|``, ties to the lower flat index (as a stable argsort).

    A partition finds the k-th magnitude in linear time; a full sort is ~10x slower.
    """
    # fmax turns NaN magnitudes into -1: pruned first, as NaN sorts last in a stable argsort.
    magnitude = np.fmax(np.abs(flat), -1)
    threshold = np.partition(magnitude, flat.size - k)[flat.size - k]
    keep = magnitude > threshold
    ties = np.flatnonzero(magnitude == threshold)
    keep[ties[: k - np.count_nonzero(keep)]] = True
    return keep


def _affine(values: np.ndarray, name: str) -> tuple[np.float32, np.float32]:
    """Float32 (scale, offset) mapping 0..255 onto [min, max] of ``values``."""
    if values.size == 0:
        return np.float32(1), np.float32(0)
    low, high = values.min(), values.max()
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, with the tensor's name
        scale = (high - low) / np.float32(_INT8_LEVELS)
    if not np.isfinite(scale):
        raise ValueError(f"int8 needs a finite range: tensor {name!r} spans [{low}, {high}]")
    # A zero step (constant tensor, or a range that underflows) would divide by zero.
    return (scale if scale > 0 else np.float32(1)), low


def _encode_int8(values: np.ndarray, name: str) -> bytes:
    """Scale, offset, then one uint8 per value: ``q = clamp(round((x - offset) / scale))``."""
    scale, offset = _affine(values, name)
    # q from the stored float32 scale and offset (in float64) keeps |error| <= scale / 2.
    steps = (values.astype(np.float64) - float(offset)) / float(scale)
    q = np.clip(np.rint(steps), 0, _INT8_LEVELS).astype(np.uint8)
    return np.array([scale, offset], _F32).tobytes() + q.tobytes()


def _decode_int8(chunk: bytes) -> np.ndarray:
    """Values ``q * scale + offset`` in float32."""
    scale, offset = np.frombuffer(chunk, _F32, count=2).astype(np.float32)
    q = np.frombuffer(chunk, np.uint8, offset=_AFFINE_BYTES)
    return q.astype(np.float32) * scale + offset


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


def resolve_codec(
    quantize: str, prune_ratio: float, custom: str | UpdateCodec | None
) -> UpdateCodec:
    """The scenario's codec: a built-in ``Codec``, or ``package.module:Name`` (class or object)."""
    if custom is None:
        return Codec(quantize, prune_ratio)
    if not isinstance(custom, str):
        return custom
    found = load_object(custom, "compression.codec")
    codec = found() if isinstance(found, type) else found
    missing = [m for m in ("encode", "decode", "payload_bytes") if not hasattr(codec, m)]
    if missing:
        raise ScenarioError(f"compression.codec: {custom!r} lacks {', '.join(missing)}")
    return codec
