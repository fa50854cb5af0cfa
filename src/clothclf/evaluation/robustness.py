"""Accuracy under common photo corruptions: blur, noise, JPEG artefacts, lighting, rotation, cropping.

Each corruption is a pure function of a full-size RGB PIL image (and, for noise, a seeded generator);
it is applied before the classifier decodes the photo at its own input size, as a visitor's upload
would be. TF-free: any :class:`clothclf.serving.classifier.Classifier` works.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from clothclf.data.images import load_image

Corruption = Callable[[Image.Image, np.random.Generator], Image.Image]


def blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian blur with a radius of 1% of the shorter side (4 px on a 400 px photo)."""
    return image.filter(ImageFilter.GaussianBlur(radius=0.01 * min(image.size)))


def noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Additive Gaussian noise, standard deviation 25 of 255 per pixel and channel."""
    pixels = np.asarray(image, np.float32) + rng.normal(0.0, 25.0, (image.height, image.width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def jpeg20(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Re-encoded as JPEG at quality 20."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=20)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _enhance(kind: type, factor: float) -> Corruption:
    def corrupt(image: Image.Image, rng: np.random.Generator) -> Image.Image:
        return kind(image).enhance(factor)

    corrupt.__doc__ = f"{kind.__name__} times {factor}."
    return corrupt


def rotate90(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Turned a quarter counter-clockwise (a photo whose orientation tag was lost)."""
    return image.transpose(Image.Transpose.ROTATE_90)


def crop60(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The central 60% of the width and of the height."""
    width, height = image.size
    left, top = round(width * 0.2), round(height * 0.2)
    return image.crop((left, top, left + round(width * 0.6), top + round(height * 0.6)))


CORRUPTIONS: dict[str, Corruption] = {
    "blur": blur,
    "noise": noise,
    "jpeg20": jpeg20,
    "brighter": _enhance(ImageEnhance.Brightness, 1.5),
    "darker": _enhance(ImageEnhance.Brightness, 0.5),
    "low_contrast": _enhance(ImageEnhance.Contrast, 0.5),
    "high_contrast": _enhance(ImageEnhance.Contrast, 1.5),
    "rotate90": rotate90,
    "crop60": crop60,
}


def corrupted_pixels(files: Sequence[Path], corruption: str | None, size: int, seed: int = 0) -> np.ndarray:
    """The photos decoded at ``size`` after ``corruption`` (None: clean), (n, size, size, 3) uint8."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(files), size, size, 3), np.uint8)
    for i, path in enumerate(files):
        image = Image.fromarray(load_image(path))
        if corruption is not None:
            image = CORRUPTIONS[corruption](image, rng)
        out[i] = load_image(image, size)
    return out


def robustness_accuracies(
    classifier, files: Sequence[Path], labels: np.ndarray, corruptions: Sequence[str] = tuple(CORRUPTIONS)
) -> dict[str, float]:
    """Accuracy of ``classifier`` on clean photos and under each corruption, by name ("clean" first)."""
    labels = np.asarray(labels)
    result = {}
    for name in (None, *corruptions):
        pixels = corrupted_pixels(files, name, classifier.image_size)
        probs = np.concatenate(
            [classifier.probabilities(pixels[i : i + 32]) for i in range(0, len(pixels), 32)]
        )
        result[name or "clean"] = float((probs.argmax(axis=1) == labels).mean())
    return result
