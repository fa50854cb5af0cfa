"""Cached LiteRT features and the NumPy head of head-only runs agree with the Keras model they came from."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from clothclf.data.datasets import create_dataset, decode_split
from clothclf.data.features import cached_features, compute_features, extractor_digest, extractor_tflite
from clothclf.errors import RunError
from clothclf.modeling.models import build_feature_extractor, build_head
from clothclf.serving.export import export_head
from clothclf.serving.runtime import DenseHead

ATOL = 1e-4  # LiteRT (XNNPACK) and TensorFlow sum in different orders


@pytest.fixture(scope="module")
def extractor() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_feature_extractor("mobilenet_v2", 32, weights=None)


def test_digest_follows_the_weights(extractor):
    same = keras.models.clone_model(extractor)
    same.set_weights(extractor.get_weights())
    assert extractor_digest(same, "mobilenet_v2") == extractor_digest(extractor, "mobilenet_v2")
    weights = extractor.get_weights()
    weights[0] = weights[0] + 1e-3
    same.set_weights(weights)
    assert extractor_digest(same, "mobilenet_v2") != extractor_digest(extractor, "mobilenet_v2")


def test_litert_features_equal_the_keras_extractor(extractor, synthetic_dataset, tmp_path):
    model_file = extractor_tflite(extractor, "mobilenet_v2", tmp_path)
    assert extractor_tflite(extractor, "mobilenet_v2", tmp_path) == model_file  # converted once
    dataset = create_dataset(synthetic_dataset)
    features = compute_features(model_file, dataset, "validation")
    decoded = decode_split(dataset.validation, 32)
    expected = extractor.predict(decoded.images.astype(np.float32), verbose=0)
    np.testing.assert_allclose(features.features, expected, atol=ATOL)
    np.testing.assert_array_equal(features.labels, decoded.labels)
    cached = cached_features(model_file, dataset, "validation", cache_dir=tmp_path, fingerprint="f")
    np.testing.assert_array_equal(cached.features, features.features)
    assert cached.files == features.files == tuple(str(p.relative_to(dataset.root)) for p in decoded.files)


@pytest.mark.parametrize("hidden_units", [0, 16])
def test_numpy_head_equals_the_keras_head(hidden_units, tmp_path):
    keras.utils.set_random_seed(1)
    head = build_head(24, 5, dropout=0.5, hidden_units=hidden_units)
    features = np.random.default_rng(0).normal(size=(7, 24)).astype(np.float32)
    loaded = DenseHead(export_head(head, tmp_path / "head.npz"))
    assert (loaded.input_dim, loaded.num_outputs) == (24, 5)
    np.testing.assert_allclose(loaded(features), head.predict(features, verbose=0), atol=1e-6)


def test_a_head_with_other_layers_is_refused(tmp_path):
    inputs = keras.Input((8,))
    head = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.BatchNormalization()(inputs)))
    with pytest.raises(ValueError, match="BatchNormalization"):
        export_head(head, tmp_path / "head.npz")
    np.savez(
        tmp_path / "odd.npz", activations=np.asarray(["gelu"]), kernel_0=np.ones((2, 2)), bias_0=np.ones(2)
    )
    with pytest.raises(RunError, match="unknown activations"):
        DenseHead(tmp_path / "odd.npz")
