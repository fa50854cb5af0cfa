"""Every backbone builds without downloads, takes raw pixels, and survives save -> load unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from clothclf.modeling.models import (
    BACKBONES,
    build_model,
    get_backbone_spec,
    load_model,
    save_model,
    unfreeze_top_layers,
)

# Smallest input each keras.applications backbone accepts (Xception needs >= 71 px).
SIZES = {"xception": 71}


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_save_load_same_output(backbone, tmp_path):
    size = SIZES.get(backbone, 32)
    model = build_model(backbone, num_classes=4, image_size=size, weights=None)
    pixels = np.random.default_rng(0).integers(0, 256, (2, size, size, 3)).astype("float32")
    before = model.predict(pixels, verbose=0)
    assert before.shape == (2, 4)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, rtol=1e-5)
    model.save(tmp_path / "model.keras")
    after = load_model(str(tmp_path / "model.keras")).predict(pixels, verbose=0)
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)


def test_a_trained_model_is_saved_without_its_optimizer_state(tmp_path):
    """After a step of AdamW with a weight EMA the saved file holds the weights only, and loads the same."""
    import keras

    model = build_model("custom_cnn", num_classes=3, image_size=32, weights=None)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, use_ema=True), loss="categorical_crossentropy")
    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    model.fit(pixels, np.eye(3)[[0, 1, 2, 0]], epochs=1, verbose=0)
    save_model(model, tmp_path / "model.keras")
    loaded = load_model(str(tmp_path / "model.keras"))
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0), atol=1e-6)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    weights_bytes = sum(w.size * 4 for w in model.get_weights())
    assert (tmp_path / "model.keras").stat().st_size < 1.3 * weights_bytes


def test_preprocessing_is_inside_the_model():
    """A MobileNetV2 model maps 0-255 pixels to [-1, 1] itself: its first layer is the rescaling."""
    model = build_model("mobilenet_v2", num_classes=3, image_size=32, weights=None)
    extractor = model.get_layer("feature_extractor")
    preprocess = extractor.get_layer("preprocess")
    out = preprocess(np.array([[[[0.0, 127.5, 255.0]]]], dtype="float32"))
    np.testing.assert_allclose(np.asarray(out), [[[[-1.0, 0.0, 1.0]]]], atol=1e-6)


def test_head_options():
    model = build_model("mobilenet_v2", 5, image_size=32, weights=None, dropout=0.5, hidden_units=16)
    head = model.get_layer("head")
    assert [layer.units for layer in head.layers if hasattr(layer, "units")] == [16, 5]


def test_unfreeze_top_layers_keeps_batchnorm_frozen():
    import keras

    model = build_model("mobilenet_v2", 3, image_size=32, weights=None)
    count = unfreeze_top_layers(model, 20)
    base = next(
        layer for layer in model.get_layer("feature_extractor").layers if isinstance(layer, keras.Model)
    )
    top = base.layers[-20:]
    assert count == sum(not isinstance(layer, keras.layers.BatchNormalization) for layer in top)
    assert not any(layer.trainable for layer in base.layers[:-20])
    assert not any(layer.trainable for layer in top if isinstance(layer, keras.layers.BatchNormalization))


def test_unknown_backbone_is_a_clear_value_error():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'.*mobilenet_v2"):
        get_backbone_spec("vgg")
