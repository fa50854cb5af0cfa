"""Classify a batch of uploaded photos with per-file errors and limits (no TensorFlow, no Streamlit)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from clothclf.config import Limits
from clothclf.errors import ClothclfError
from clothclf.images import DEFAULT_MAX_PIXELS, ImageInput, describe, load_image
from clothclf.predict import Classifier, Prediction

MB = 1024 * 1024
UPLOAD_TYPES = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")


@dataclass(frozen=True)
class UploadResult:
    """The outcome for one uploaded file: its prediction, or a message saying why there is none."""

    name: str
    prediction: Prediction | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.prediction is not None


def display_name(label: str) -> str:
    """A class name as people write it: ``"t-shirt"`` -> ``"T-shirt"``, ``"long_sleeve"`` -> ``"Long sleeve"``."""
    text = label.replace("_", " ")
    return text[:1].upper() + text[1:]


def classify_upload(
    classifier: Classifier, name: str, data: bytes, limits: Limits, top_k: int = 3
) -> UploadResult:
    """Classify one uploaded file, turning size, pixel and format problems into an error message."""
    if len(data) > limits.max_upload_mb * MB:
        size = len(data) / MB
        return UploadResult(
            name,
            error=f"{size:.2f} MB is over the limit of {limits.max_upload_mb} MB per file",
        )
    try:
        pixels = load_image(data, classifier.image_size, limits.max_pixels)
        return UploadResult(name, prediction=classifier.predict(pixels, top_k))
    except ClothclfError as exc:  # the message starts with "<bytes>: "; the name is shown beside it
        return UploadResult(name, error=str(exc).removeprefix(f"{describe(data)}: "))


def classify_uploads(
    classifier: Classifier, uploads: Sequence[tuple[str, bytes]], limits: Limits, top_k: int = 3
) -> list[UploadResult]:
    """Classify ``(name, bytes)`` uploads in order. Files past ``limits.max_files_per_batch`` are not
    classified and get an error saying the limit; a bad file never stops the others."""
    results = []
    for i, (name, data) in enumerate(uploads):
        if i >= limits.max_files_per_batch:
            error = f"not classified: at most {limits.max_files_per_batch} files per batch"
            results.append(UploadResult(name, error=error))
        else:
            results.append(classify_upload(classifier, name, data, limits, top_k))
    return results


def preview(data: bytes, max_side: int = 480, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The photo as an upright RGB array no larger than ``max_side`` on either side, for display."""
    image = Image.fromarray(load_image(data, None, max_pixels))
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return np.asarray(image)


def square_thumbnail(source: ImageInput, size: int = 200, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The photo center-cropped to a square of ``size`` pixels (for tidy grids), upright RGB."""
    image = Image.fromarray(load_image(source, None, max_pixels))
    return np.asarray(ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR))


def low_confidence(prediction: Prediction, threshold: float) -> bool:
    """True when the top class's probability is below ``threshold``: maybe none of the known classes."""
    return prediction.confidence < threshold


def results_table(results: Sequence[UploadResult]) -> list[dict]:
    """One row per file: name, label, confidence, the top-k as text, and the error (if any)."""
    return [
        {
            "file": r.name,
            "label": r.prediction.label if r.prediction else None,
            "confidence": round(r.prediction.confidence, 4) if r.prediction else None,
            "top_k": "; ".join(f"{label} {p:.1%}" for label, p in r.prediction.top_k) if r.prediction else "",
            "error": r.error or "",
        }
        for r in results
    ]


def results_csv(results: Sequence[UploadResult]) -> str:
    """The results as CSV text: the :func:`results_table` columns plus one probability column per class."""
    classes = next((list(r.prediction.probabilities) for r in results if r.prediction), [])
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=["file", "label", "confidence", "top_k", "error", *(f"p_{c}" for c in classes)]
    )
    writer.writeheader()
    for result, row in zip(results, results_table(results)):
        probs = result.prediction.probabilities if result.prediction else {}
        writer.writerow({**row, **{f"p_{c}": round(probs[c], 6) if c in probs else "" for c in classes}})
    return buffer.getvalue()
