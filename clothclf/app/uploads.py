"""Uploads: a batch of photos classified with per-file errors and limits, and a zipped dataset extracted
(no TensorFlow, no Streamlit)."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps

from clothclf.config import Limits, Paths
from clothclf.data.archives import DEFAULT_LIMITS, find_dataset_root, safe_extract_zip
from clothclf.data.datasets import create_dataset
from clothclf.data.images import DEFAULT_MAX_PIXELS, ImageInput, describe, load_image
from clothclf.errors import ClothclfError, DatasetError
from clothclf.serving.classifier import Classifier, Prediction

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


def extract_uploaded_dataset(source: IO[bytes], paths: Paths, limits: Limits = DEFAULT_LIMITS) -> Path:
    """Extract an uploaded zip of class folders into a new ``<data_dir>/uploads/<id>`` folder and
    return its dataset root. :class:`~clothclf.errors.DatasetError` (nothing kept) if it holds no
    usable dataset; :class:`~clothclf.errors.LimitExceededError` if it breaks ``limits``."""
    dest = paths.data_dir / "uploads" / secrets.token_hex(8)
    try:
        root = find_dataset_root(safe_extract_zip(source, dest, limits))
        create_dataset(root)
    except BaseException as exc:
        shutil.rmtree(dest, ignore_errors=True)
        if isinstance(exc, OSError):
            raise DatasetError(f"cannot extract the upload into {dest.parent}: {exc}") from exc
        raise
    return root
