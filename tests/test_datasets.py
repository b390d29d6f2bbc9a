"""Real datasets read from small files the tests write in the real formats: LEAF JSON, idx,
CIFAR-10 python pickles; and MNIST-1D as its package generates it."""

from __future__ import annotations

import gzip
import json
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from clirun import invoke
from conftest import small_raw

import hierfl
import hierfl.learn.datasets as datasets
from hierfl.errors import ScenarioError
from hierfl.learn.data import data_shape, draw_sample_counts, make_data
from hierfl.learn.datasets import LEAF_LETTERS
from hierfl.scenario import DataConfig

COUNTS = {"w0": 5, "w1": 10, "w2": 3}


def femnist_json(path: Path, counts: dict[str, int] = COUNTS, start: int = 0) -> Path:
    """A LEAF FEMNIST file: each writer's rows of 784 pixels; pixel 0 holds the row number
    (from ``start``), labels count up mod 62."""
    data: dict = {"users": list(counts), "num_samples": list(counts.values()), "user_data": {}}
    row = start
    for user, n in counts.items():
        xs, ys = [], []
        for _ in range(n):
            xs.append([float(row)] + [0.5] * 783)
            ys.append(row % 62)
            row += 1
        data["user_data"][user] = {"x": xs, "y": ys}
    path.write_text(json.dumps(data))
    return path


def shakespeare_json(path: Path) -> Path:
    """A LEAF Shakespeare file: two speakers, 80-character lines, next character as label."""
    text = "To be, or not to be: that is the question. Whether 'tis nobler in the mind to suffer"
    lines = [text[i : i + 80] for i in range(4)]
    data = {
        "users": ["HAMLET", "OPHELIA"],
        "num_samples": [3, 1],
        "user_data": {
            "HAMLET": {"x": lines[:3], "y": [text[80], text[81], text[82]]},
            "OPHELIA": {"x": lines[3:], "y": [text[83]]},
        },
    }
    path.write_text(json.dumps(data))
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file of unsigned bytes: 0, 0, type 0x08, ndim, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def mnist_root(root: Path, folder: str = "MNIST", zipped: bool = False) -> Path:
    """torchvision's layout: ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", 30), ("t10k", 7)):
        images = rng.integers(0, 256, size=(n, 28, 28))
        labels = np.arange(n) % 10
        for name, array in ((f"{part}-images-idx3-ubyte", images),
                            (f"{part}-labels-idx1-ubyte", labels)):
            data = idx_bytes(array)
            if zipped:
                (raw / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (raw / name).write_bytes(data)
    return root


def cifar_root(root: Path) -> Path:
    """ROOT/cifar-10-batches-py with data_batch_1..5 and test_batch, pickled (protocol 2)
    dicts of uint8 (n, 3072) data and label lists, as CIFAR-10 ships them."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        data = np.full((4, 3072), i * 10, dtype=np.uint8)
        data[:, 0] = 255
        batch = {b"batch_label": name.encode(), b"labels": [0, 1, 2, i],
                 b"data": data, b"filenames": [b"a.png"] * 4}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


def config(**values: object) -> DataConfig:
    return DataConfig(**values)


def test_femnist_devices_take_writers_in_file_order(tmp_path):
    """Device i holds writer i's training samples (last 10% of each writer held out as the
    test set); more devices than writers is refused unless allow_reuse, then device i takes
    writer i mod 3."""
    cfg = config(kind="femnist", path=str(femnist_json(tmp_path / "f.json")))
    rng = np.random.default_rng(0)
    counts = draw_sample_counts(cfg, 3, rng)
    assert counts.tolist() == [5, 9, 3]  # w1 holds out int(0.1 * 10) = 1
    data = make_data(cfg, counts, rng)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 62
    assert data.x.shape == (17, 1, 28, 28)
    assert data.x[:, 0, 0, 0].tolist() == [*range(0, 5), *range(5, 14), *range(15, 18)]
    assert data.y.tolist() == [r % 62 for r in [*range(0, 5), *range(5, 14), *range(15, 18)]]
    assert data.x_test[:, 0, 0, 0].tolist() == [14.0] and data.y_test.tolist() == [14]
    with pytest.raises(ScenarioError, match="4 devices but the femnist data has 3 users"):
        draw_sample_counts(cfg, 4, rng)
    shared = config(kind="femnist", path=cfg.path, allow_reuse=True)
    assert draw_sample_counts(shared, 5, rng).tolist() == [5, 9, 3, 5, 9]


def test_leaf_train_and_test_folders(tmp_path):
    """LEAF's folder layout: train/*.json are the devices' data, test/*.json the test set
    (test_samples of them drawn when there are more)."""
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    femnist_json(tmp_path / "train" / "a.json", {"w0": 4})
    femnist_json(tmp_path / "train" / "b.json", {"w1": 2}, start=4)
    femnist_json(tmp_path / "test" / "a.json", {"w0": 3, "w1": 3}, start=100)
    cfg = config(kind="femnist", path=str(tmp_path), test_samples=4)
    rng = np.random.default_rng(1)
    counts = draw_sample_counts(cfg, 2, rng)
    assert counts.tolist() == [4, 2]
    data = make_data(cfg, counts, rng)
    assert data.x[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]
    test_rows = data.x_test[:, 0, 0, 0].tolist()
    assert len(test_rows) == 4 and set(test_rows) <= set(range(100, 106))
    assert test_rows == sorted(test_rows)


def test_shakespeare_maps_characters_to_leaf_letters(tmp_path):
    """Each line becomes 80 letter indices of LEAF's alphabet; the label is the index of the
    next character; 80 classes."""
    cfg = config(kind="shakespeare", path=str(shakespeare_json(tmp_path / "s.json")))
    assert data_shape(cfg) == ((80,), 80)
    rng = np.random.default_rng(0)
    with pytest.raises(ScenarioError, match="leaves no test samples"):
        draw_sample_counts(cfg, 2, rng)  # 10% of 3 and of 1 rounds down: none held out
    text = "To be, or not to be: that is the question. Whether 'tis nobler in the mind to suffer"
    lines = {f"u{i}": 10 for i in range(1)}
    data = {"users": list(lines), "num_samples": [10],
            "user_data": {"u0": {"x": [text[i : i + 80] for i in range(4)] * 2 + [text[:80]] * 2,
                                 "y": [text[80 + i % 4] for i in range(10)]}}}
    (tmp_path / "s10.json").write_text(json.dumps(data))
    cfg = config(kind="shakespeare", path=str(tmp_path / "s10.json"))
    built = make_data(cfg, draw_sample_counts(cfg, 1, rng), rng)
    assert built.x.shape == (9, 80) and built.x_test.shape == (1, 80)
    assert built.x[0].tolist() == [float(LEAF_LETTERS.index(c)) for c in text[:80]]
    assert built.y[0].item() == LEAF_LETTERS.index(text[80])


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "cannot read"),
        ('{"users": ["a"]}', "is not LEAF JSON"),
        ('{"users": ["a"], "num_samples": [2], "user_data": {"a": {"x": [[0.5]], "y": [1]}}}',
         "x has 1 rows, y 1, num_samples says 2"),
        ('{"users": ["a"], "num_samples": [1], "user_data": {"a": {"x": [[0.5]], "y": [1]}}}',
         "rows of 784 finite numbers"),
        ('{"users": ["a"], "user_data": {"a": {"x": [[' + ",".join(["0"] * 784) + ']], '
         '"y": [62]}}}', "y must hold integers 0..61"),
    ],
)
def test_malformed_leaf_is_one_line_exit_2(tmp_path, content, needle):
    """A malformed LEAF file stops `hierfl run` with one line naming data.path, exit 2, and
    no run folder."""
    (tmp_path / "bad.json").write_text(content)
    raw = small_raw(data={"kind": "femnist", "path": "bad.json"})
    scenario = tmp_path / "s.toml"
    scenario.write_text(_toml(raw))
    out = tmp_path / "out"
    done = invoke("run", str(scenario), "--out", str(out), "--quiet")
    assert done.one_error_line and "data.path" in done.err and needle in done.err, done
    assert not out.exists()


def _toml(raw: dict) -> str:
    """The small scenario table as TOML (its values are numbers, strings and flat tables)."""
    lines = [f'name = "{raw["name"]}"', f"seed = {raw['seed']}"]
    for section in ("run", "data", "model", "compression", "selection", "topology"):
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in raw[section].items()]
    for group in raw["devices"]:
        lines += ["[[devices]]", f'profile = "{group["profile"]}"', f"count = {group['count']}"]
    return "\n".join(lines) + "\n"


def test_mnist_and_fashion_read_idx_files(tmp_path):
    """MNIST and Fashion-MNIST read their four idx files (plain or .gz) from torchvision's
    ROOT/MNIST/raw (ROOT/FashionMNIST/raw): pixels / 255, (1, 28, 28), the t10k test set."""
    cases = (("mnist", "MNIST", False), ("fashion_mnist", "FashionMNIST", True))
    for kind, folder, zipped in cases:
        root = mnist_root(tmp_path / kind, folder, zipped)
        cfg = config(kind=kind, path=str(root), samples_per_device=5)
        rng = np.random.default_rng(0)
        data = make_data(cfg, draw_sample_counts(cfg, 4, rng), rng)
        assert data.input_shape == (1, 28, 28) and data.num_classes == 10
        assert data.x.shape == (20, 1, 28, 28) and data.x_test.shape == (7, 1, 28, 28)
        assert data.y_test.tolist() == [0, 1, 2, 3, 4, 5, 6]
        assert float(data.x.max()) <= 1.0 and float(data.x.min()) >= 0.0
        file = root / folder / "raw" / f"t10k-images-idx3-ubyte{'.gz' * zipped}"
        stored = gzip.decompress(file.read_bytes()) if zipped else file.read_bytes()
        raw = np.frombuffer(stored, dtype=np.uint8, offset=16).reshape(7, 28, 28)
        np.testing.assert_allclose(data.x_test[:, 0].numpy(), raw / 255, rtol=1e-6)


def test_idx_files_missing_or_cut_short_are_one_error(tmp_path):
    """A missing idx file, or one shorter than its header says, is a ScenarioError naming
    data.path; so is a fleet asking for more samples than the 30 training images hold."""
    root = mnist_root(tmp_path)
    cfg = config(kind="mnist", path=str(root), samples_per_device=5)
    rng = np.random.default_rng(0)
    with pytest.raises(ScenarioError, match="data.allow_reuse"):
        make_data(cfg, draw_sample_counts(cfg, 7, rng), rng)
    labels = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1])
    with pytest.raises(ScenarioError, match="holds 37 bytes, its header says 38"):
        make_data(cfg, draw_sample_counts(cfg, 2, rng), rng)
    labels.unlink()
    with pytest.raises(ScenarioError, match="data.path: no train-labels-idx1-ubyte"):
        make_data(cfg, draw_sample_counts(cfg, 2, rng), rng)


def test_cifar10_reads_python_batches(tmp_path):
    """CIFAR-10's five data batches and test_batch: (3, 32, 32), pixels / 255, labels."""
    root = cifar_root(tmp_path)
    cfg = config(kind="cifar10", path=str(root), samples_per_device=4)
    rng = np.random.default_rng(0)
    data = make_data(cfg, draw_sample_counts(cfg, 5, rng), rng)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert data.x.shape == (20, 3, 32, 32) and data.y_test.tolist() == [0, 1, 2, 5]
    assert data.x_test[0, 0, 0, 0].item() == 1.0
    assert data.x_test[0, 0, 0, 1].item() == pytest.approx(50 / 255)
    assert sorted(data.y.tolist()) == sorted([0, 1, 2, 0, 0, 1, 2, 1, 0, 1, 2, 2,
                                              0, 1, 2, 3, 0, 1, 2, 4])


def test_cifar_pickle_naming_other_code_is_refused(tmp_path):
    """A batch whose pickle names anything but numpy arrays is refused, never run."""
    root = cifar_root(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    cfg = config(kind="cifar10", path=str(root), samples_per_device=1)
    rng = np.random.default_rng(0)
    with pytest.raises(ScenarioError, match="refusing to load builtins.print"):
        make_data(cfg, draw_sample_counts(cfg, 1, rng), rng)


def test_mnist1d_is_generated_without_touching_global_generators(monkeypatch):
    """MNIST-1D comes from its package: sequences of 40 points, 10 classes, 80/20 split, the
    same arrays every time; Python's and numpy's global generators are left as they were."""
    monkeypatch.setattr(datasets, "MNIST1D_SAMPLES", 200)
    cfg = config(kind="mnist1d", samples_per_device=10, partition="dirichlet", alpha=0.5)
    random.seed(5)
    np.random.seed(5)  # noqa: NPY002
    before = (random.random(), np.random.random())  # noqa: NPY002
    random.seed(5)
    np.random.seed(5)  # noqa: NPY002
    data = make_data(cfg, draw_sample_counts(cfg, 4, np.random.default_rng(0)),
                     np.random.default_rng(0))
    assert (random.random(), np.random.random()) == before  # noqa: NPY002
    assert data.input_shape == (40,) and data.num_classes == 10
    assert data.x.shape == (40, 40) and data.x_test.shape == (40, 40)
    again = make_data(cfg, draw_sample_counts(cfg, 4, np.random.default_rng(0)),
                      np.random.default_rng(0))
    assert (again.x == data.x).all() and (again.y == data.y).all()


def test_path_kinds_need_a_path_and_leaf_keeps_its_partition():
    """femnist, shakespeare, mnist, fashion_mnist and cifar10 need data.path; LEAF data
    refuses a dirichlet partition (its users are the partition)."""
    for kind in ("femnist", "shakespeare", "mnist", "fashion_mnist", "cifar10"):
        with pytest.raises(ScenarioError, match=f"path is required when kind = '{kind}'"):
            hierfl.parse_scenario(small_raw(data={"kind": kind}))
    with pytest.raises(ScenarioError, match="natural partition"):
        hierfl.parse_scenario(small_raw(data={"kind": "femnist", "path": "x",
                                              "partition": "dirichlet"}))


def test_a_femnist_run_learns_end_to_end(tmp_path):
    """A scenario file with a relative LEAF path runs from anywhere: two writers, compact
    MLP, one round; the summary records the data's shape and leaves out samples_per_device."""
    femnist_json(tmp_path / "f.json")
    raw = small_raw(run={"cloud_rounds": 1, "learning": True},
                    data={"kind": "femnist", "path": "f.json", "test_samples": 10},
                    devices=[{"profile": "mobile", "count": 3}])
    (tmp_path / "s.toml").write_text(_toml(raw))
    result = hierfl.run(hierfl.load_scenario(tmp_path / "s.toml"))
    section = result.summary["scenario"]["data"]
    assert section["input_dim"] == 784 and section["num_classes"] == 62
    assert "samples_per_device" not in section
    assert section["path"] == str(tmp_path / "f.json")
    assert result.rounds["accuracy"].notna().all()
