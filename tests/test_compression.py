"""Codecs: hand-computed payload sizes and bytes, round trips, and their invariants."""

import math
import struct

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hierfl.compression import (
    DENSE,
    MAX_CLUSTER_BITS,
    QUANTIZERS,
    Codec,
    clustered_bytes,
    is_prunable,
    kmeans_1d,
    specs_of,
)

SPECS = [("fc.weight", (64, 32)), ("fc.bias", (64,))]
F32_EPS = float(np.finfo(np.float32).eps)
ALL_CODECS = [
    Codec(), Codec("int8"), Codec(prune_ratio=0.3), Codec("int8", 0.3),
    Codec(cluster_bits=4), Codec(prune_ratio=0.3, cluster_bits=3), Codec(top_k=0.1),
    Codec("int8", top_k=0.25),
]


def random_model(seed: int = 0) -> dict[str, torch.Tensor]:
    """A small conv + linear model's worth of normal values."""
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "conv.weight": (8, 1, 3, 3),
        "conv.bias": (8,),
        "fc.weight": (10, 72),
        "fc.bias": (10,),
    }
    return {name: torch.randn(shape, generator=g) for name, shape in shapes.items()}


def top_k_mask(x: np.ndarray, k: int) -> np.ndarray:
    """Reference: the k largest |x|, ties to the lower flat index, by a stable full sort."""
    mask = np.zeros(x.size, bool)
    mask[np.argsort(-np.abs(x.ravel()), kind="stable")[:k]] = True
    return mask


def int8_step(values: np.ndarray) -> float:
    """The rule's float32 scale: (max - min) / 255, or 1 when that is zero."""
    if values.size == 0:
        return 1.0
    scale = (values.max() - values.min()) / np.float32(255)
    return float(scale) if scale > 0 else 1.0


def test_is_prunable():
    """Only weight tensors with at least two dimensions are pruned."""
    assert is_prunable("conv.weight", (8, 1, 3, 3))
    assert is_prunable("fc.weight", (64, 32))
    assert not is_prunable("fc.bias", (64,))
    assert not is_prunable("norm.weight", (64,))
    assert not is_prunable("fc.weight_scale", (4, 4))


def test_kept():
    """kept = n - floor(n * prune_ratio) for prunable tensors, else n."""
    assert Codec(prune_ratio=0.3).kept(2048, True) == 2048 - 614  # floor(614.4)
    assert Codec(prune_ratio=0.3).kept(2048, False) == 2048
    assert Codec().kept(2048, True) == 2048
    assert Codec(prune_ratio=0.99).kept(1, True) == 1  # floor(0.99) = 0


def test_payload_bytes_dense():
    """Dense float32: 4 bytes per element, no header."""
    assert Codec().payload_bytes(SPECS) == 4 * (2048 + 64) == 8448


def test_payload_bytes_int8():
    """int8: one byte per element plus 8 bytes (scale, offset) per tensor."""
    assert Codec("int8").payload_bytes(SPECS) == (2048 + 8) + (64 + 8) == 2128


def test_payload_bytes_pruned_float():
    """Pruned float weight goes sparse when smaller; the bias is never pruned."""
    # k = 2048 - floor(0.3 * 2048) = 2048 - 614 = 1434
    # weight sparse = ceil(2048 / 8) + 4 * 1434 = 256 + 5736 = 5992 < 4 * 2048 = 8192
    # bias dense = 4 * 64 = 256
    assert Codec(prune_ratio=0.3).payload_bytes(SPECS) == 5992 + 256 == 6248


def test_payload_bytes_pruned_int8():
    """Pruned int8 weight: bitmap, 8 bytes of scale/offset, one byte per kept value."""
    # weight sparse = 256 + 1434 + 8 = 1698 < 2048 + 8 = 2056; bias = 64 + 8 = 72
    assert Codec("int8", 0.3).payload_bytes(SPECS) == 1698 + 72 == 1770


def test_dense_chosen_when_sparse_is_not_smaller():
    """A lightly pruned tensor is sent dense, zeros included, when sparse would be larger."""
    # int8 at 0.05: k = 2048 - floor(102.4) = 1946; sparse 256 + 1946 + 8 = 2210 > 2056
    assert Codec("int8", 0.05).payload_bytes(SPECS) == 2056 + 72
    # float at 0.03: k = 2048 - floor(61.44) = 1987; sparse 256 + 4 * 1987 = 8204 > 8192
    assert Codec(prune_ratio=0.03).payload_bytes(SPECS) == 8192 + 256
    # float at 0.05 is still sparse: 256 + 4 * 1946 = 8040 < 8192
    assert Codec(prune_ratio=0.05).payload_bytes(SPECS) == 8040 + 256


def test_equal_sizes_go_dense():
    """Sparse must be strictly smaller: on a tie the tensor is sent dense."""
    # n = 8, k = 8 - floor(1.0) = 7: int8 sparse 1 + 7 + 8 = 16 == dense 8 + 8
    codec = Codec("int8", 0.125)
    assert codec.payload_bytes([("w.weight", (2, 4))]) == 16
    x = torch.tensor([[1.0, -2.0, 3.0, -4.0], [5.0, -6.0, 7.0, 0.5]])
    decoded = codec.decode(codec.encode({"w.weight": x}), [("w.weight", (2, 4))])["w.weight"]
    step = 13 / 255  # dense over [-6, 7] with the pruned 0.5 as zero
    assert abs(decoded[1, 3].item()) <= step / 2 + 1e-6


def test_dense_bytes_little_endian():
    """DENSE writes each tensor's float32 values little-endian, one tensor after another."""
    tensors = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([[0.5]])}
    assert DENSE.encode(tensors) == struct.pack("<3f", 1.0, -2.0, 0.5)


def test_int8_bytes():
    """int8 writes scale, offset (float32), then q = round((x - offset) / scale) per element."""
    x = torch.tensor([-1.0, 0.0, 0.5, 3.0])
    scale = np.float32(4) / np.float32(255)  # (max - min) / 255 in float32
    # (x + 1) / scale = 0, 63.75, 95.625, 255
    assert Codec("int8").encode({"x": x}) == struct.pack("<ff", scale, -1.0) + bytes(
        [0, 64, 96, 255]
    )


def test_sparse_float_bytes():
    """Sparse float: packbits bitmap (big bit order) then kept values in flat-index order."""
    x = torch.tensor([[0.1, -5.0, 0.2, 3.0], [0.0, 0.0, 0.0, -0.3]])
    # n = 8, k = 4: keep indices 1, 2, 3, 7 -> bits 0111 0001; 1 + 16 bytes < 32
    payload = Codec(prune_ratio=0.5).encode({"w.weight": x})
    assert payload == bytes([0b01110001]) + struct.pack("<4f", -5.0, 0.2, 3.0, -0.3)


def test_ties_keep_lower_index():
    """Among equal magnitudes, the lower flat index is kept."""
    x = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 2.0, 0.0]])
    codec = Codec(prune_ratio=0.5)  # k = 6 - 3 = 3: 2.0, then the first two of |1|
    decoded = codec.decode(codec.encode({"w.weight": x}), specs_of({"w.weight": x}))
    assert torch.equal(decoded["w.weight"], torch.tensor([[1.0, -1.0, 0.0], [0.0, 2.0, 0.0]]))


@pytest.mark.parametrize("codec", ALL_CODECS, ids=str)
def test_encoded_length_matches_payload_bytes(codec):
    """len(encode(t)) == payload_bytes(specs_of(t)) for every codec."""
    tensors = random_model()
    assert len(codec.encode(tensors)) == codec.payload_bytes(specs_of(tensors))


@pytest.mark.parametrize("codec", ALL_CODECS, ids=str)
def test_decode_shapes_and_order(codec):
    """decode gives float32 tensors of the spec shapes, keyed in spec order."""
    tensors = random_model()
    decoded = codec.decode(codec.encode(tensors), specs_of(tensors))
    assert list(decoded) == list(tensors)
    for name, tensor in decoded.items():
        assert tensor.dtype == torch.float32
        assert tensor.shape == tensors[name].shape


def test_dense_round_trip_exact():
    """Dense float32 decodes bit for bit."""
    tensors = random_model()
    decoded = DENSE.decode(DENSE.encode(tensors), specs_of(tensors))
    assert all(torch.equal(decoded[name], tensors[name]) for name in tensors)


def test_int8_error_within_half_step():
    """int8 decodes within scale / 2 (the stored float32 scale) of every value."""
    x = torch.randn(1000, generator=torch.Generator().manual_seed(1)) * 3 + 7
    payload = Codec("int8").encode({"x": x})
    (scale,) = struct.unpack("<f", payload[:4])
    decoded = Codec("int8").decode(payload, [("x", (1000,))])["x"]
    tolerance = scale / 2 + 4 * F32_EPS * x.abs().max().item()
    assert (decoded - x).abs().max().item() <= tolerance


def test_int8_constant_tensor_exact():
    """A constant tensor (max == min, scale 1) decodes exactly under int8."""
    x = torch.full((3, 4), -2.75)
    decoded = Codec("int8").decode(Codec("int8").encode({"x": x}), [("x", (3, 4))])
    assert torch.equal(decoded["x"], x)


def test_pruning_keeps_top_k_magnitudes():
    """Pruning keeps exactly the k largest |x| (exact as float), and decodes zeros elsewhere."""
    x = torch.randn(40, 30, generator=torch.Generator().manual_seed(2))
    codec = Codec(prune_ratio=0.7)
    k = 1200 - math.floor(1200 * 0.7)
    decoded = codec.decode(codec.encode({"w.weight": x}), [("w.weight", (40, 30))])["w.weight"]
    expected = top_k_mask(x.numpy(), k).reshape(40, 30)
    assert torch.equal(decoded != 0, torch.from_numpy(expected))
    assert torch.equal(decoded[expected], x[expected])


def test_pruning_int8_kept_values_within_half_step():
    """Pruned int8 keeps the top k within half a step of a scale over the kept values only."""
    x = torch.randn(40, 30, generator=torch.Generator().manual_seed(3)).numpy()
    codec = Codec("int8", 0.7)
    k = codec.kept(1200, True)
    decoded = codec.decode(
        codec.encode({"w.weight": torch.from_numpy(x)}), [("w.weight", (40, 30))]
    )
    decoded_np = decoded["w.weight"].numpy().ravel()
    keep = top_k_mask(x, k)
    tolerance = int8_step(x.ravel()[keep]) / 2 + 4 * F32_EPS * np.abs(x).max()
    assert np.all(decoded_np[~keep] == 0)
    assert np.abs(decoded_np[keep] - x.ravel()[keep]).max() <= tolerance


@pytest.mark.parametrize("quantize", ["int4", "", "INT8"])
def test_bad_quantize(quantize):
    """An unknown quantize value is refused, naming the value."""
    with pytest.raises(ValueError, match=f"'{quantize}'"):
        Codec(quantize=quantize)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_prune_ratio(ratio):
    """prune_ratio must lie in [0, 1), and the error names the value."""
    with pytest.raises(ValueError, match=f"prune_ratio.*{ratio}"):
        Codec(prune_ratio=ratio)


@pytest.mark.parametrize("codec", ALL_CODECS, ids=str)
def test_wrong_payload_length(codec):
    """A truncated or overlong payload is refused with a ValueError."""
    tensors = random_model()
    payload = codec.encode(tensors)
    with pytest.raises(ValueError, match="bytes"):
        codec.decode(payload[:-1], specs_of(tensors))
    with pytest.raises(ValueError, match="bytes"):
        codec.decode(payload + b"\0", specs_of(tensors))


def test_corrupt_bitmap():
    """A sparse bitmap that marks the wrong number of values is refused."""
    payload = Codec(prune_ratio=0.5).encode({"w.weight": torch.ones(2, 4)})
    with pytest.raises(ValueError, match="bitmap"):
        Codec(prune_ratio=0.5).decode(b"\xff" + payload[1:], [("w.weight", (2, 4))])


def test_int8_refuses_non_finite():
    """int8 cannot quantize infinite or NaN values; the error names the tensor."""
    with pytest.raises(ValueError, match="'x'"):
        Codec("int8").encode({"x": torch.tensor([0.0, float("inf")])})


@st.composite
def tensor_sets(draw):
    """Up to four named float32 tensors of random (possibly empty) shapes and values."""
    tensors = {}
    for i in range(draw(st.integers(1, 4))):
        shape = tuple(draw(st.lists(st.integers(0, 12), min_size=1, max_size=3)))
        kind = draw(st.sampled_from(["weight", "bias"]))
        floats = st.floats(-1e6, 1e6, width=32)
        tensors[f"t{i}.{kind}"] = torch.from_numpy(
            draw(hnp.arrays(np.float32, shape, elements=floats))
        )
    return tensors


codecs = st.one_of(
    st.builds(Codec, quantize=st.sampled_from(QUANTIZERS), prune_ratio=st.floats(0, 0.99)),
    st.builds(Codec, quantize=st.sampled_from(QUANTIZERS), top_k=st.floats(0.01, 1)),
)
clustering = st.builds(
    Codec, prune_ratio=st.sampled_from([0.0, 0.3, 0.9]), top_k=st.just(1.0),
    cluster_bits=st.integers(1, MAX_CLUSTER_BITS),
)


@settings(deadline=None)
@given(tensors=tensor_sets(), codec=st.one_of(codecs, clustering))
def test_length_invariant(tensors, codec):
    """For any shapes, values and ratio, len(encode) equals payload_bytes of the specs."""
    assert len(codec.encode(tensors)) == codec.payload_bytes(specs_of(tensors))


def value_bytes(codec: Codec, count: int) -> int:
    """Bytes of count values in the codec's value format (clustered only when smaller)."""
    if codec.quantize == "int8":
        return count + 8
    if codec.cluster_bits is not None:
        return min(4 * count, 4 * 2**codec.cluster_bits + math.ceil(count * codec.cluster_bits / 8))
    return 4 * count


@settings(deadline=None)
@given(tensors=tensor_sets(), codec=codecs)
def test_round_trip_invariant(tensors, codec):
    """Decoding gives the top-k values (exact as float, within half a step as int8), else 0."""
    decoded = codec.decode(codec.encode(tensors), specs_of(tensors))
    for name, tensor in tensors.items():
        x, y = tensor.numpy().ravel(), decoded[name].numpy().ravel()
        n = x.size
        k = codec.kept(n, is_prunable(name, tuple(tensor.shape)))
        keep = top_k_mask(x, k)
        pruned = np.where(keep, x, np.float32(0))
        sparse = k < n and math.ceil(n / 8) + value_bytes(codec, k) < value_bytes(codec, n)
        if codec.quantize == "none":
            assert np.array_equal(y, pruned)
            continue
        if sparse:
            assert np.all(y[~keep] == 0)
        scaled = x[keep] if sparse else pruned
        tolerance = int8_step(scaled) / 2 + 4 * F32_EPS * float(np.abs(x).max(initial=0))
        assert np.all(np.abs(y - pruned) <= tolerance)


@settings(deadline=None)
@given(tensors=tensor_sets(), codec=st.one_of(codecs, clustering), n=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_rows_encode_and_decode_like_one_update_at_a_time(tensors, codec, n, seed):
    """encode_rows / decode_rows on stacked updates give each update's own bytes and values."""
    specs = specs_of(tensors)
    flat = np.concatenate([t.numpy().ravel() for t in tensors.values()])
    noise = np.random.default_rng(seed).normal(size=(n, flat.size)).astype(np.float32)
    rows = flat + noise * np.float32(seed % 3)  # seed % 3 == 0: n identical updates
    one_by_one = [codec.encode(dict(zip(tensors, split(row, specs), strict=True)))
                  for row in rows]
    assert codec.encode_rows(rows, specs) == one_by_one
    decoded = codec.decode_rows(one_by_one, specs)
    for row, payload in zip(decoded, one_by_one, strict=True):
        alone = codec.decode(payload, specs)
        assert np.array_equal(row, np.concatenate([t.numpy().ravel() for t in alone.values()]))


def split(row: np.ndarray, specs) -> list[torch.Tensor]:
    """A flat row back into tensors of the spec shapes."""
    sizes = np.cumsum([math.prod(shape) for _, shape in specs])[:-1]
    return [torch.from_numpy(part.copy()).reshape(shape)
            for part, (_, shape) in zip(np.split(row, sizes), specs, strict=True)]


def test_payload_bytes_clustered():
    """Clustered: 4 * 2^b codebook + ceil(n b / 8) index bytes, or float32 when not smaller."""
    # b = 4: weight 64 + 1024, bias 64 + 32 (96 < 256)
    assert Codec(cluster_bits=4).payload_bytes(SPECS) == 1088 + 96 == 1184
    # b = 8: weight 1024 + 2048; bias 1024 + 64 > 256, so float32
    assert Codec(cluster_bits=8).payload_bytes(SPECS) == 3072 + 256 == 3328
    assert clustered_bytes(10, 3) == 32 + 4  # 30 bits in 4 bytes


def test_payload_bytes_clustered_and_pruned():
    """With pruning, a clustered tensor is sent sparse only when bitmap + kept is smaller."""
    # b = 2, k = 1434: sparse 256 + 16 + 359 = 631 > dense 16 + 512 = 528, so dense
    assert Codec(prune_ratio=0.3, cluster_bits=2).payload_bytes(SPECS) == 528 + 32
    # b = 6, k = 1434: sparse 256 + 256 + 1076 = 1588 < dense 256 + 1536 = 1792
    assert Codec(prune_ratio=0.3, cluster_bits=6).payload_bytes(SPECS) == 1588 + 256


def test_cluster_bytes_one_bit():
    """b = 1: two float32 centroids, then one index bit per element, most significant first."""
    x = torch.tensor([0.0, 4.0, 0.5, 5.0, 4.5])
    # grid 0, 5 -> clusters {0, 0.5}, {4, 4.5, 5}: centroids 0.25, 4.5; bits 01011 + 000
    assert Codec(cluster_bits=1).encode({"x": x}) == struct.pack("<2f", 0.25, 4.5) + bytes(
        [0b01011000]
    )


def test_cluster_bytes_three_bits_across_bytes():
    """b = 3: indices run across byte boundaries; eight evenly spaced values are exact."""
    x = torch.tensor([0.0, 1, 2, 3, 4, 5, 6, 7, 7, 6])
    payload = Codec(cluster_bits=3).encode({"x": x})
    # 000 001 010 011 100 101 110 111 111 110 (+ 00): 00000101 00111001 01110111 11111000
    assert payload == struct.pack("<8f", *range(8)) + bytes([0x05, 0x39, 0x77, 0xF8])
    assert torch.equal(Codec(cluster_bits=3).decode(payload, [("x", (10,))])["x"], x)


def test_kmeans_is_deterministic_and_beats_the_uniform_grid():
    """k-means gives the same codebook every time and no more error than the uniform grid."""
    x = np.random.default_rng(3).standard_normal(5000).astype(np.float32)
    (a, nearest), (b, again) = kmeans_1d(x, 16), kmeans_1d(x, 16)
    assert np.array_equal(a, b) and np.array_equal(nearest, again)
    assert np.all(np.diff(a) >= 0)
    grid = np.linspace(x.min(), x.max(), 16)
    grid_mse = np.mean((x - grid[np.abs(x[:, None] - grid).argmin(axis=1)]) ** 2)
    assert np.mean((x - a[nearest]) ** 2) < grid_mse


def cluster_bound(values: np.ndarray, bits: int) -> float:
    """The documented bound on the mean squared error: (range / (2 (2^b - 1)))^2, plus the
    rounding of centroids and values to float32."""
    if values.size == 0:
        return 0.0
    spread = float(values.max()) - float(values.min())
    rounding = 4 * F32_EPS * float(np.abs(values).max())
    return (spread / (2 * (2**bits - 1)) + rounding) ** 2


@settings(deadline=None)
@given(tensors=tensor_sets(), codec=clustering)
def test_cluster_round_trip_within_bound(tensors, codec):
    """Clustering (alone or after pruning) keeps each tensor's mean squared error within the
    uniform grid's bound, over the values it sends; float32 tensors decode exactly."""
    decoded = codec.decode(codec.encode(tensors), specs_of(tensors))
    for name, tensor in tensors.items():
        x, y = tensor.numpy().ravel(), decoded[name].numpy().ravel()
        k = codec.kept(x.size, is_prunable(name, tuple(tensor.shape)))
        keep = top_k_mask(x, k)
        pruned = np.where(keep, x, np.float32(0))
        sparse = k < x.size and math.ceil(x.size / 8) + value_bytes(codec, k) < value_bytes(
            codec, x.size)
        sent = x[keep] if sparse else pruned
        if sparse:
            assert np.all(y[~keep] == 0)
        error = (y[keep] if sparse else y) - sent
        if value_bytes(codec, sent.size) == 4 * sent.size:
            assert np.array_equal(y, pruned)
        else:
            assert np.mean(error.astype(np.float64) ** 2) <= cluster_bound(sent, codec.cluster_bits)


def test_top_k_keeps_the_largest_of_every_tensor():
    """top_k keeps ceil(n * top_k) largest magnitudes of every tensor, biases too, sparse."""
    tensors = {"fc.bias": torch.tensor([0.1, -3.0, 0.2, 2.0, 0.0, 0.0, 0.0, 1.0])}
    codec = Codec(top_k=0.25)  # k = 2 of 8: bitmap 01010000 then -3, 2 (9 < 32 bytes)
    payload = codec.encode(tensors)
    assert payload == bytes([0b01010000]) + struct.pack("<2f", -3.0, 2.0)
    decoded = codec.decode(payload, specs_of(tensors))["fc.bias"]
    assert torch.equal(decoded, torch.tensor([0.0, -3.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize(
    "settings_, needle",
    [
        ({"cluster_bits": 9}, "'cluster_bits' must be in 1..8: 9"),
        ({"cluster_bits": 0}, "'cluster_bits' must be in 1..8: 0"),
        ({"cluster_bits": 4, "quantize": "int8"}, "'cluster_bits' replaces 'quantize'"),
        ({"top_k": 0.0}, "'top_k' must be > 0 and <= 1: 0.0"),
        ({"top_k": 0.5, "prune_ratio": 0.3}, "exclude each other"),
    ],
)
def test_bad_codec_settings(settings_, needle):
    """Out-of-range or conflicting codec settings raise a ValueError naming the setting."""
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        Codec(**settings_)


def test_clustering_refuses_non_finite():
    """k-means cannot cluster infinite or NaN values; the error names the tensor."""
    with pytest.raises(ValueError, match="'x'"):
        Codec(cluster_bits=2).encode({"x": torch.tensor([0.0, 1, 2, 3, 4, 5, float("nan")])})
