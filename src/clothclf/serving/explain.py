"""Where the model looked: class activation maps from the last feature map and the head, in NumPy.

The backbone's last feature map ``A`` (h, w, d) reaches the head only through global average pooling,
so the gradient of a class score with respect to ``A`` is the same at every position:
``dlogit/dpooled / (h*w)``. Weighting the map's channels by that gradient is Grad-CAM (Selvaraju et
al., 2017), computed exactly here without TensorFlow; for a head that is one dense layer the gradient
is that class's column of weights and the map is the exact class activation map (CAM, Zhou et al.,
2016): the class score is the map's spatial mean. For a head with a hidden layer the gradient goes
through it (ReLU masks of this image), which is Grad-CAM at the last convolutional layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from clothclf.serving.runtime import DenseHead


@dataclass(frozen=True)
class Explanation:
    """A heatmap over the whole image (rows x columns, 0..1, any resolution) and the label it explains."""

    heatmap: np.ndarray
    label: str
    method: str

    def resized(self, width: int, height: int) -> np.ndarray:
        """The heatmap at ``width`` x ``height`` (bilinear), e.g. the size of the photo as given."""
        image = Image.fromarray(self.heatmap.astype(np.float32), mode="F")
        return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))


def head_gradient(head: DenseHead, features: np.ndarray, class_index: int) -> np.ndarray:
    """d logit[class_index] / d features for one feature vector, through the head's layers."""
    inputs = head.hidden(features[None])
    gradient = head.layers[-1][0][:, class_index]
    for (kernel, _, activation), output in zip(reversed(head.layers[:-1]), reversed(inputs[1:])):
        if activation == "relu":
            gradient = gradient * (output[0] > 0)
        gradient = kernel @ gradient
    return gradient


def method_name(head: DenseHead) -> str:
    """Which method explains this head's answers."""
    return "CAM" if len(head.layers) == 1 else "Grad-CAM (head gradient in NumPy)"


def activation_map(feature_map: np.ndarray, head: DenseHead, class_index: int) -> np.ndarray:
    """The map (h, w) of one image's feature map (h, w, d) for a class: positive part, peak 1."""
    gradient = head_gradient(head, feature_map.mean(axis=(0, 1)), class_index)
    cam = np.maximum(feature_map @ gradient, 0.0)
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).astype(np.float32)


_COLORS = np.asarray([[0, 0, 128], [0, 128, 255], [0, 230, 120], [255, 220, 0], [230, 0, 0]], np.float32)


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """A 0..1 heatmap as RGB ``uint8`` (dark blue -> cyan -> green -> yellow -> red)."""
    position = np.clip(heatmap, 0.0, 1.0) * (len(_COLORS) - 1)
    low = np.floor(position).astype(int).clip(0, len(_COLORS) - 2)
    weight = (position - low)[..., None]
    return ((1 - weight) * _COLORS[low] + weight * _COLORS[low + 1]).astype(np.uint8)


def overlay(image: Image.Image, explanation: Explanation, alpha: float = 0.45) -> Image.Image:
    """``image`` (RGB) with the explanation's heatmap blended over it."""
    rgb = image.convert("RGB")
    colors = Image.fromarray(colorize(explanation.resized(*rgb.size)))
    return Image.blend(rgb, colors, alpha)
