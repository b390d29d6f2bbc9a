"""summary.json's scenario says what the run used: real data shapes, the codec that encoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hierfl
from hierfl.compression import Codec

EXAMPLES = Path(__file__).parents[1] / "examples"


@pytest.fixture
def npz_20x3(tmp_path) -> str:
    """60 samples of 20 features in 3 classes."""
    path = tmp_path / "data.npz"
    np.savez(path, x=np.random.default_rng(0).random((60, 20)), y=np.arange(60) % 3)
    return str(path)


@pytest.mark.parametrize("learning", [True, False])
def test_npz_records_its_own_shape(make_scenario, npz_20x3, learning):
    """An npz of 20 features and 3 classes is recorded as such, not as the 32 and 10 defaults."""
    scenario = make_scenario(
        run={"learning": learning},
        data={"kind": "npz", "path": npz_20x3, "samples_per_device": 5},
    )
    result = hierfl.run(scenario)
    data = result.summary["scenario"]["data"]
    assert (data["input_dim"], data["num_classes"]) == (20, 3)
    assert result.summary["model"]["n_params"] == (20 * 64 + 64) + (64 * 32 + 32) + (32 * 3 + 3)
    assert not {"class_sep", "feature_shift", "alpha"} & set(data)
    assert data["path"] == npz_20x3 and data["kind"] == "npz"


def test_synthetic_keeps_its_settings(make_scenario):
    """Synthetic data uses input_dim, num_classes, class_sep and feature_shift: all recorded;
    alpha only under dirichlet."""
    iid = hierfl.run(make_scenario(data={"input_dim": 5, "num_classes": 4}))
    data = iid.summary["scenario"]["data"]
    assert (data["input_dim"], data["num_classes"], data["class_sep"]) == (5, 4, 0.8)
    assert "feature_shift" in data and "alpha" not in data
    skewed = hierfl.run(make_scenario(data={"partition": "dirichlet", "alpha": 0.3}))
    assert skewed.summary["scenario"]["data"]["alpha"] == 0.3


def test_digits_records_64_features_and_10_classes(make_scenario):
    """Digits are 8x8 images of 10 classes, whatever input_dim and num_classes say."""
    pytest.importorskip("sklearn", reason="data.kind = 'digits' needs scikit-learn")
    scenario = make_scenario(data={"kind": "digits", "input_dim": 7, "num_classes": 2})
    data = hierfl.run(scenario).summary["scenario"]["data"]
    assert (data["input_dim"], data["num_classes"]) == (64, 10)


def test_a_custom_codec_replaces_quantize_and_prune(make_scenario, monkeypatch):
    """With your own codec, by name or as an object, quantize, prune_ratio, cluster_bits and
    top_k are not listed (error_feedback and downlink still apply); a Codec passed from
    Python records its own settings."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import custom

    compression = {"quantize": "int8", "prune_ratio": 0.3}
    applies = {"payload": "delta", "error_feedback": False, "downlink": "none"}
    named = make_scenario(compression={**compression, "codec": "custom:Float16Codec"})
    by_name = hierfl.run(named).summary["scenario"]["compression"]
    assert by_name == {"codec": "custom:Float16Codec", **applies}
    passed = hierfl.run(make_scenario(compression=compression), codec=custom.Float16Codec())
    assert passed.summary["scenario"]["compression"] == {"codec": "custom:Float16Codec", **applies}
    builtin = hierfl.run(make_scenario(compression=compression), codec=Codec("none", 0.5))
    assert builtin.summary["scenario"]["compression"] == {
        "quantize": "none",
        "prune_ratio": 0.5,
        "top_k": 1.0,
        **applies,
    }
    plain = hierfl.run(make_scenario(compression=compression)).summary["scenario"]
    assert plain["compression"] == {**compression, "top_k": 1.0, **applies}
