"""A registry of backbones and the builders of clothclf's models.

Every model takes raw RGB pixels 0-255 of shape (size, size, 3): the backbone's own input
preprocessing is a layer inside the model. A model is ``head(feature_extractor(pixels))``, two
named sub-models, so the head can be trained alone on cached features and reused unchanged.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

# The registry is TF-free in clothclf.modeling.backbones; re-exported here for model-building callers.
from clothclf.modeling.backbones import BACKBONES, BackboneSpec, get_backbone_spec  # noqa: F401
from clothclf.modeling.efficientnet_lite import build_efficientnet_lite


@keras.saving.register_keras_serializable(package="clothclf")
class CaffePreprocessing(layers.Layer):
    """ResNet-style input preprocessing: RGB to BGR, then subtract the ImageNet channel means."""

    def call(self, inputs):
        bgr = keras.ops.flip(inputs, axis=-1)
        return bgr - keras.ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=inputs.dtype)


def _preprocessing_layer(kind: str) -> layers.Layer | None:
    if kind == "tf":
        return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")
    if kind == "unit":
        return layers.Rescaling(1.0 / 255.0, name="preprocess")
    if kind == "caffe":
        return CaffePreprocessing(name="preprocess")
    if kind == "lite":
        return layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="preprocess")
    return None


def _custom_cnn(image_size: int) -> keras.Model:
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for filters in (32, 64, 128, 256):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(0.1)(x)
    return keras.Model(inputs, x, name="custom_cnn")


def build_backbone(name: str, image_size: int, weights: str | None = "imagenet") -> keras.Model:
    """The convolutional base of ``name`` (no top), expecting already-preprocessed input."""
    spec = get_backbone_spec(name)
    if not spec.pretrained:
        return _custom_cnn(image_size)
    if spec.weights_package:
        return build_efficientnet_lite(name, image_size, weights)
    constructor = getattr(keras.applications, spec.application)
    return constructor(
        include_top=False,
        weights=weights,
        input_shape=(image_size, image_size, 3),
        **dict(spec.extra_kwargs),
    )


def build_feature_extractor(
    backbone: str, image_size: int = 224, weights: str | None = "imagenet"
) -> keras.Model:
    """Raw pixels -> preprocessing -> backbone (batch-norm in inference mode) -> global average pooling."""
    spec = get_backbone_spec(backbone)
    base = build_backbone(backbone, image_size, weights if spec.pretrained else None)
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    preprocess = _preprocessing_layer(spec.preprocessing)
    x = preprocess(inputs) if preprocess is not None else inputs
    # Pretrained bases run in inference mode: their batch-norm statistics stay fixed when unfrozen.
    # An untrained base (no weights) learns from scratch, batch-norm statistics included.
    x = base(x, training=False) if spec.pretrained and weights is not None else base(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name="feature_extractor")


def build_head(
    feature_dim: int, num_classes: int, dropout: float = 0.2, hidden_units: int = 0
) -> keras.Model:
    """Dropout, an optional hidden dense layer, and a softmax over ``num_classes``."""
    inputs = keras.Input((feature_dim,), name="features")
    x = layers.Dropout(dropout)(inputs)
    if hidden_units:
        x = layers.Dense(hidden_units, activation="relu")(x)
        x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="head")


def build_model(
    backbone: str,
    num_classes: int,
    image_size: int = 224,
    weights: str | None = "imagenet",
    dropout: float = 0.2,
    hidden_units: int = 0,
) -> keras.Model:
    """A classifier of raw RGB pixels (0-255) into ``num_classes`` classes."""
    extractor = build_feature_extractor(backbone, image_size, weights)
    head = build_head(extractor.output_shape[-1], num_classes, dropout, hidden_units)
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    return keras.Model(inputs, head(extractor(inputs)), name=f"clothclf_{backbone}")


def backbone_layers(model: keras.Model) -> keras.Model:
    """The pretrained base inside a model built by :func:`build_model`."""
    extractor = model.get_layer("feature_extractor")
    return next(layer for layer in extractor.layers if isinstance(layer, keras.Model))


def unfreeze_top_layers(model: keras.Model, count: int) -> int:
    """Make the top ``count`` layers of the base trainable, batch-norm excepted; return how many are."""
    base = backbone_layers(model)
    base.trainable = True
    cut = max(len(base.layers) - count, 0)
    trainable = 0
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= cut and not isinstance(layer, layers.BatchNormalization)
        trainable += layer.trainable
    return trainable


def save_model(model: keras.Model, path: str | Path) -> None:
    """Save ``model`` as a ``.keras`` file without its optimizer's state (AdamW's two moments and a
    weight EMA would make the file four times the weights); :func:`load_model` loads it uncompiled."""
    copy = type(model).from_config(model.get_config())  # built, never compiled (clone_model compiles)
    copy.set_weights(model.get_weights())
    copy.save(path)


def load_model(path: str) -> keras.Model:
    """Load a saved ``model.keras`` (this module registers clothclf's custom layers)."""
    return keras.saving.load_model(path, compile=False)


def _pooled_and_map(extractor: keras.Model, pixels):
    """The extractor's layers called on ``pixels``: (pooled features, the feature map before pooling)."""
    x = pixels
    for layer in extractor.layers[1:-1]:  # after the input, up to the pooling layer
        x = layer(x)
    return extractor.layers[-1](x), x


def with_feature_map(extractor: keras.Model) -> keras.Model:
    """A feature extractor with two named outputs: pooled ``features`` and the last ``feature_map``."""
    pixels = keras.Input(tuple(extractor.input_shape[1:]), name="pixels")
    features, feature_map = _pooled_and_map(extractor, pixels)
    return keras.Model(pixels, {"features": features, "feature_map": feature_map}, name=extractor.name)


def with_trust_outputs(model: keras.Model) -> keras.Model:
    """The same classifier with three named outputs: ``probabilities``, the pooled backbone ``features``
    and the backbone's last ``feature_map`` (for out-of-distribution scores and class activation maps)."""
    pixels = keras.Input(tuple(model.input_shape[1:]), name="pixels")
    features, feature_map = _pooled_and_map(model.get_layer("feature_extractor"), pixels)
    outputs = {
        "probabilities": model.get_layer("head")(features),
        "features": features,
        "feature_map": feature_map,
    }
    return keras.Model(pixels, outputs, name=f"{model.name}_trust")
