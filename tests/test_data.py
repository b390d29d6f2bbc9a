"""Datasets and partitions: counts, offsets, label skew, learnability, digits, npz files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hierfl.errors import ScenarioError
from hierfl.learn.data import FederatedData, data_shape, draw_sample_counts, make_data
from hierfl.scenario import DataConfig


def build(cfg: DataConfig, n_devices: int, seed: int = 0) -> FederatedData:
    """Counts and data drawn from one generator, as a run does."""
    rng = np.random.default_rng(seed)
    return make_data(cfg, draw_sample_counts(cfg, n_devices, rng), rng)


def max_class_share(data: FederatedData) -> float:
    """Mean over devices of the largest share one class has of a device's labels."""
    shares = []
    for i in range(data.n_devices):
        labels = data.y[data.device_slice(i)].numpy()
        shares.append(np.bincount(labels, minlength=data.num_classes).max() / len(labels))
    return float(np.mean(shares))


def central_accuracy(data: FederatedData, steps: int = 300) -> float:
    """Test accuracy of a multinomial logistic regression trained on the pooled data."""
    x, x_test = data.x.flatten(1), data.x_test.flatten(1)
    weight = torch.zeros(x.shape[1], data.num_classes, requires_grad=True)
    bias = torch.zeros(data.num_classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(x @ weight + bias, data.y).backward()
        optimizer.step()
    with torch.no_grad():
        return (x_test @ weight + bias).argmax(1).eq(data.y_test).float().mean().item()


def write_npz(path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture
def tagged_npz(tmp_path) -> str:
    """100 samples whose first feature is their row number; label = row % 3."""
    rows = np.arange(100)
    x = np.stack([rows, -rows], axis=1).astype(np.float32)
    return write_npz(tmp_path / "tagged.npz", x=x, y=rows % 3)


def test_counts_in_range_and_reproducible():
    """Counts are int64, inside [low, high] inclusive, both ends reached, same seed same counts."""
    cfg = DataConfig(samples_per_device=(3, 5))
    counts = draw_sample_counts(cfg, 1000, np.random.default_rng(1))
    assert counts.dtype == np.int64 and counts.shape == (1000,)
    assert set(np.unique(counts)) == {3, 4, 5}
    again = draw_sample_counts(cfg, 1000, np.random.default_rng(1))
    assert np.array_equal(counts, again)


def test_counts_for_a_million_devices_are_cheap():
    """A timing-only fleet of 1,000,000 devices gets its counts at once."""
    counts = draw_sample_counts(DataConfig(), 1_000_000, np.random.default_rng(0))
    assert counts.shape == (1_000_000,) and counts.min() >= 20 and counts.max() <= 80


def test_offsets_match_counts():
    """offsets[0] = 0, diff(offsets) = counts, and device_slice covers each device's rows."""
    counts = np.array([2, 0, 5, 1])
    data = make_data(DataConfig(), counts, np.random.default_rng(0))
    assert data.offsets.dtype == np.int64
    assert data.offsets.tolist() == [0, 2, 2, 7, 8]
    assert data.n_devices == 4
    assert data.device_slice(2) == slice(2, 7)
    assert data.x.shape == (8, 32) and data.y.shape == (8,)
    assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
    assert data.x_test.shape == (2000, 32) and data.y_test.shape == (2000,)


@pytest.mark.parametrize("kind", ["synthetic", "seed", "digits"])
@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_same_inputs_same_tensors(kind, partition):
    """The output depends only on (cfg, counts, rng state)."""
    cfg = DataConfig(kind=kind, partition=partition, test_samples=50)
    first, again = build(cfg, 12, seed=5), build(cfg, 12, seed=5)
    for name in ("x", "y", "x_test", "y_test"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert not torch.equal(first.x, build(cfg, 12, seed=6).x[: len(first.x)])


def test_labels_in_range():
    """Every label is a class index 0 .. num_classes - 1."""
    data = build(DataConfig(num_classes=4, partition="dirichlet", alpha=0.05), 50)
    assert data.num_classes == 4
    assert set(data.y.unique().tolist()) <= {0, 1, 2, 3}
    assert set(data.y_test.unique().tolist()) <= {0, 1, 2, 3}


@pytest.mark.parametrize("kind", ["synthetic", "digits"])
def test_dirichlet_skews_labels(kind):
    """Small-alpha Dirichlet: a device's top class holds most of its labels; iid: about 1/5."""
    shared = {"samples_per_device": (60, 60), "allow_reuse": True}
    iid = build(DataConfig(kind=kind, **shared), 100)
    skewed = build(DataConfig(kind=kind, partition="dirichlet", alpha=0.1, **shared), 100)
    assert max_class_share(iid) < 0.3
    assert max_class_share(skewed) > 0.6


def test_seed_kind_feature_shift():
    """Device i's features average i * feature_shift (the seed's per-device bias)."""
    cfg = DataConfig(kind="seed", samples_per_device=(400, 400), feature_shift=0.1)
    data = build(cfg, 10)
    means = [float(data.x[data.device_slice(i)].mean()) for i in range(10)]
    # 400 x 32 standard normals per device: the mean's standard deviation is 1/113
    assert means == pytest.approx([0.1 * i for i in range(10)], abs=0.05)


def test_synthetic_is_learnable_seed_is_not():
    """Central logistic regression beats 0.5 on synthetic, and stays near chance on seed data."""
    synthetic = build(DataConfig(test_samples=1000), 20)
    seed = build(DataConfig(kind="seed", test_samples=1000), 20)
    assert central_accuracy(synthetic) >= 0.5
    assert central_accuracy(seed) < 0.2


def test_synthetic_shift_cycles_over_twenty_devices():
    """Device i is shifted by (i mod 20) * feature_shift: device 20 looks like device 0."""
    cfg = DataConfig(kind="seed", samples_per_device=(400, 400), feature_shift=1.0)
    data = build(cfg, 22)
    means = [float(data.x[data.device_slice(i)].mean()) for i in (0, 1, 19, 20, 21)]
    assert means == pytest.approx([0.0, 1.0, 19.0, 0.0, 1.0], abs=0.05)


def test_digits_shapes_and_range():
    """Digits are (1, 8, 8) images in [0, 1], 10 classes; the test set is capped at 30%."""
    data = build(DataConfig(kind="digits", samples_per_device=(30, 30)), 10)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert data.x.shape == (300, 1, 8, 8) and data.x.dtype == torch.float32
    assert float(data.x.min()) >= 0 and float(data.x.max()) == 1.0
    assert data.x_test.shape == (int(0.3 * 1797), 1, 8, 8)
    assert data_shape(DataConfig(kind="digits")) == ((1, 8, 8), 10)


def test_digits_without_scikit_learn(monkeypatch):
    """Without scikit-learn, digits says how to install it."""
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ScenarioError, match=r"data\.kind: 'digits' needs scikit-learn"):
        build(DataConfig(kind="digits"), 2)


def test_data_shape_without_building(tagged_npz):
    """data_shape reads synthetic shapes from the config and npz shapes from the file."""
    assert data_shape(DataConfig(input_dim=7, num_classes=3)) == ((7,), 3)
    assert data_shape(DataConfig(kind="npz", path=tagged_npz)) == ((2,), 3)


def test_npz_round_trip(tagged_npz):
    """npz rows reach devices intact; 30% are held out; devices are disjoint when the pool fits."""
    cfg = DataConfig(kind="npz", path=tagged_npz, test_samples=1000)
    data = make_data(cfg, np.array([10, 20, 40]), np.random.default_rng(0))
    rows = data.x[:, 0].long()
    assert torch.equal(data.x[:, 1], -data.x[:, 0])
    assert torch.equal(data.y, rows % 3)
    assert len(set(rows.tolist())) == 70
    assert len(data.x_test) == 30
    assert not set(rows.tolist()) & set(data.x_test[:, 0].long().tolist())
    assert data.input_shape == (2,) and data.num_classes == 3


def test_npz_pool_reuse_across_devices_only(tagged_npz):
    """With allow_reuse, samples beyond the pool repeat across devices, never within one."""
    cfg = DataConfig(kind="npz", path=tagged_npz, test_samples=10, allow_reuse=True)
    data = make_data(cfg, np.array([60, 60, 60]), np.random.default_rng(0))
    for i in range(3):
        rows = data.x[data.device_slice(i), 0].tolist()
        assert len(set(rows)) == 60
    assert len(set(data.x[:, 0].tolist())) <= 90


def test_npz_given_test_set(tmp_path):
    """x_test / y_test in the file are the test set; classes count labels of both."""
    path = write_npz(
        tmp_path / "split.npz",
        x=np.ones((6, 2, 3)),
        y=np.array([0, 1, 0, 1, 0, 1]),
        x_test=np.zeros((4, 2, 3)),
        y_test=np.array([0, 1, 2, 3]),
    )
    data = make_data(DataConfig(kind="npz", path=path), np.array([3, 3]), np.random.default_rng(0))
    assert data.num_classes == 4 and data.input_shape == (2, 3)
    assert torch.equal(data.x_test, torch.zeros(4, 2, 3))
    assert data.y_test.tolist() == [0, 1, 2, 3]
    assert torch.equal(data.x, torch.ones(6, 2, 3))


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"x": np.ones((5, 2))}, "has no array 'y'"),
        ({"x": np.ones((5, 2)), "y": np.zeros(4, dtype=int)}, r"y must have shape \(5,\)"),
        ({"x": np.ones((5, 2)), "y": np.zeros(5)}, "integer labels"),
        ({"x": np.ones((5, 2)), "y": np.zeros(5, dtype=int), "x_test": np.ones((2, 2))}, "both"),
        ({"x": np.ones(5), "y": np.zeros(5, dtype=int)}, "x must have shape"),
        (
            {
                "x": np.ones((5, 2)),
                "y": np.zeros(5, dtype=int),
                "x_test": np.ones((2, 3)),
                "y_test": np.zeros(2, dtype=int),
            },
            "x_test samples have shape",
        ),
    ],
)
def test_npz_errors(tmp_path, arrays, problem):
    """A malformed npz file is a ScenarioError naming data.path and the problem."""
    cfg = DataConfig(kind="npz", path=write_npz(tmp_path / "bad.npz", **arrays))
    with pytest.raises(ScenarioError, match=rf"data\.path: .*{problem}"):
        make_data(cfg, np.array([2]), np.random.default_rng(0))


def test_npz_missing_file(tmp_path):
    """A path with no file behind it is a ScenarioError naming data.path and the path."""
    cfg = DataConfig(kind="npz", path=str(tmp_path / "nowhere.npz"))
    with pytest.raises(ScenarioError, match=r"data\.path: no such npz file.*nowhere\.npz"):
        data_shape(cfg)


def test_a_pool_too_small_for_the_fleet_is_refused(tagged_npz):
    """Devices asking for more samples than the pool holds is an error naming allow_reuse.

    100 rows, 10 held out: 90 in the pool; three devices of 60 ask for 180, 90 too many.
    """
    cfg = DataConfig(kind="npz", path=tagged_npz, test_samples=10)
    with pytest.raises(ScenarioError) as caught:
        make_data(cfg, np.array([60, 60, 60]), np.random.default_rng(0))
    message = str(caught.value)
    assert message.startswith("data.allow_reuse: the devices ask for 180 npz samples, 90 more")
    assert "(90 after the test set)" in message and "\n" not in message
    fits = make_data(cfg, np.array([30, 30, 30]), np.random.default_rng(0))
    assert len(set(fits.x[:, 0].tolist())) == 90, "a pool that suffices is split disjointly"


def test_dirichlet_counts_each_class_pool(tagged_npz):
    """Under dirichlet a device's classes are asked of their own pools: a short class counts.

    90 samples in three classes of 30 (label = row % 3): 60 samples from one device with
    alpha so small that nearly all come from one class ask more of it than it holds.
    """
    cfg = DataConfig(
        kind="npz", path=tagged_npz, test_samples=10, partition="dirichlet", alpha=0.001
    )
    with pytest.raises(ScenarioError, match=r"more than their classes' pools hold \(90 after"):
        make_data(cfg, np.array([60]), np.random.default_rng(0))


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"x": np.array([[1.0, np.nan], [2.0, 3.0]]), "y": np.array([0, 1])}, "finite: 1 val"),
        ({"x": np.array([[1.0, np.inf], [-np.inf, 3.0]]), "y": np.array([0, 1])}, "finite: 2"),
        ({"x": np.array([[1e300, 0.0], [2.0, 3.0]]), "y": np.array([0, 1])}, "float32's range"),
        ({"x": np.array([["a", "b"], ["c", "d"]]), "y": np.array([0, 1])}, "dtype <U1"),
        ({"x": np.ones((2, 2), dtype=complex), "y": np.array([0, 1])}, "must hold numbers"),
        ({"x": np.ones((2, 2)), "y": np.array([0, 10**9])}, "labels must be < 100,000"),
        ({"x": np.ones((2, 2)), "y": np.array([0, -1])}, "integer labels >= 0"),
        ({"x": np.ones((2, 0)), "y": np.array([0, 1])}, "features >= 1"),
        (
            {
                "x": np.ones((2, 2)),
                "y": np.array([0, 1]),
                "x_test": np.array([[np.nan, 0.0]]),
                "y_test": np.array([0]),
            },
            "x_test must be finite",
        ),
    ],
)
def test_npz_bad_values(tmp_path, arrays, problem):
    """NaN, infinite or non-numeric features, and labels that are negative or huge, are refused.

    A label of 10^9 would otherwise give the model 10^9 output units (128 GB of weights).
    """
    cfg = DataConfig(kind="npz", path=write_npz(tmp_path / "bad.npz", **arrays))
    for read in (data_shape, lambda c: make_data(c, np.array([1]), np.random.default_rng(0))):
        with pytest.raises(ScenarioError, match=rf"data\.path: .*{problem}"):
            read(cfg)


def test_npz_damaged_files(tmp_path, tagged_npz):
    """A truncated archive, a bare .npy array or a text file is one ScenarioError line."""
    whole = Path(tagged_npz).read_bytes()
    cases = {
        "truncated.npz": whole[: len(whole) // 2],
        "empty.npz": b"",
        "text.npz": b"x,y\n1,2\n",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "single.npy", np.ones((3, 2)))
    for name in [*cases, "single.npy"]:
        cfg = DataConfig(kind="npz", path=str(tmp_path / name))
        with pytest.raises(ScenarioError, match=r"data\.path: cannot read") as caught:
            data_shape(cfg)
        assert "\n" not in str(caught.value)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cut=st.integers(0, 10_000),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4),
)
def test_corrupted_npz_is_read_or_refused(tmp_path, tagged_npz, cut, flips):
    """Any truncation or byte flips of an npz file give valid data or one ScenarioError line."""
    content = bytearray(Path(tagged_npz).read_bytes())
    for at, xor in flips:
        content[at % len(content)] ^= xor
    corrupted = tmp_path / "corrupted.npz"
    corrupted.write_bytes(bytes(content[: cut % (len(content) + 1)]))
    cfg = DataConfig(kind="npz", path=str(corrupted), test_samples=10)
    try:
        data = make_data(cfg, np.array([5, 5]), np.random.default_rng(0))
    except ScenarioError as error:
        assert "\n" not in str(error) and str(error).startswith("data.")
        return
    assert torch.isfinite(data.x).all() and int(data.y.min()) >= 0


def test_cli_refuses_bad_npz_in_one_line(tmp_path):
    """`hierfl run` on NaN features: one error line naming data.path, exit 2, no run folder.

    The scenario names its npz relative to itself and runs from another working directory.
    """
    study = tmp_path / "study"
    study.mkdir()
    write_npz(study / "nan.npz", x=np.array([[np.nan, 1.0]] * 4), y=np.array([0, 1, 0, 1]))
    scenario = study / "s.toml"
    scenario.write_text(
        '[data]\nkind = "npz"\npath = "nan.npz"\n[[devices]]\nprofile = "mobile"\ncount = 1\n'
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "hierfl", "run", str(scenario), "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: data.path: x must be finite: 4 values are NaN")
    assert str(study / "nan.npz") in done.stderr
    assert not out.exists()
