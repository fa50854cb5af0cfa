"""Uploads: a batch of photos classified with per-file errors and limits (no TensorFlow, no Streamlit).
Uploaded dataset zips are :mod:`clothclf.app.training_data`'s."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

import numpy as np
from PIL import Image

from clothclf.allocator import release_freed_memory
from clothclf.config import MB, Limits
from clothclf.data.images import DEFAULT_MAX_PIXELS, ImageInput, describe, load_image, load_preview
from clothclf.data.layout import IMAGE_EXTENSIONS
from clothclf.errors import ClothclfError
from clothclf.serving.classifier import Classifier, Prediction
from clothclf.serving.explain import overlay

#: The file name extensions of the formats clothclf reads (the dataset reader's), without the dot.
#: The upload widget takes any file (its type filter would drop others without a word); a file with
#: another extension gets :func:`unread_format_error`.
UPLOAD_TYPES = tuple(sorted(ext.removeprefix(".") for ext in IMAGE_EXTENSIONS))
#: The formats clothclf reads, for people: "JPEG, PNG, WebP, GIF, BMP or TIFF (.bmp, .gif, …)".
READ_FORMATS = f"JPEG, PNG, WebP, GIF, BMP or TIFF ({', '.join(f'.{t}' for t in UPLOAD_TYPES)})"
#: An uploaded file: its bytes, a binary file object (read without copying it) or a path.
Upload = bytes | bytearray | memoryview | IO[bytes] | str | os.PathLike


@dataclass(frozen=True)
class UploadResult:
    """The outcome for one uploaded file: its prediction, or a message saying why there is none."""

    name: str
    prediction: Prediction | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.prediction is not None


def upload_size(data: Upload) -> int:
    """The size in bytes of an upload (bytes, a binary file object or a path), without reading it."""
    if isinstance(data, (str, os.PathLike)):
        return os.stat(data).st_size
    if isinstance(data, (bytes, bytearray, memoryview)):
        return memoryview(data).nbytes
    position = data.seek(0, io.SEEK_END)
    data.seek(0)
    return position


def _from_start(data: Upload) -> Upload:
    """The upload rewound, so a file object read before (classified, then previewed) reads whole."""
    if hasattr(data, "seek"):
        data.seek(0)
    return data


def unread_format_error(name: str) -> str | None:
    """Why a file named ``name`` is not read, from its extension (``.avif``, ``.heic``, ``.jp2``, ``.svg``…):
    the formats that are; None for a readable extension or a name without one (decided by its bytes)."""
    suffix = os.path.splitext(name)[1].lower()
    if not suffix or suffix in IMAGE_EXTENSIONS:
        return None
    return f"not an image format clothclf reads: {suffix} files are not read; it reads {READ_FORMATS}"


def classify_upload(
    classifier: Classifier, name: str, data: Upload, limits: Limits, top_k: int = 3
) -> UploadResult:
    """Classify one uploaded file, turning format, size and pixel problems into an error message."""
    if (unread := unread_format_error(name)) is not None:
        return UploadResult(name, error=unread)
    size = upload_size(data)
    if size > limits.max_upload_mb * MB:
        return UploadResult(
            name,
            error=f"{size / MB:.2f} MB is over the limit of {limits.max_upload_mb} MB per file",
        )
    try:
        pixels = load_image(_from_start(data), classifier.image_size, limits.max_pixels)
        return UploadResult(name, prediction=classifier.predict(pixels, top_k))
    except ClothclfError as exc:  # the message starts with "<bytes>: "; the name is shown beside it
        return UploadResult(name, error=str(exc).removeprefix(f"{describe(data)}: "))


def batch_limits_text(limits: Limits) -> str:
    """The per-batch limits in one sentence, for the uploader's help and its errors."""
    return (
        f"Up to {limits.max_files_per_batch} photos at once, {limits.max_upload_mb} MB each, "
        f"{limits.max_batch_mb} MB in total."
    )


def classify_uploads(
    classifier: Classifier, uploads: Sequence[tuple[str, Upload]], limits: Limits, top_k: int = 3
) -> list[UploadResult]:
    """Classify ``(name, data)`` uploads in order, one at a time; a bad file never stops the others.

    Files past ``limits.max_files_per_batch``, and files that would take the classified ones past
    ``limits.max_batch_mb`` in total, are refused before anything of them is read, with an error
    saying the limit. The memory the decodes freed is given back to the system at the end.
    """
    results, total = [], 0
    for i, (name, data) in enumerate(uploads):
        size = upload_size(data)
        if i >= limits.max_files_per_batch:
            error = f"not classified: at most {limits.max_files_per_batch} files per batch"
        elif total + size > limits.max_batch_mb * MB:
            error = f"not classified: with this file the batch is over {limits.max_batch_mb} MB in total"
        else:
            total += size
            results.append(classify_upload(classifier, name, data, limits, top_k))
            continue
        results.append(UploadResult(name, error=f"{error} ({batch_limits_text(limits)})"))
    release_freed_memory(collect_garbage=False)
    return results


def preview(data: ImageInput, max_side: int = 480, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The photo as an upright RGB array no larger than ``max_side`` on either side, for display
    (the memory its decode freed is given back to the system)."""
    try:
        return load_preview(_from_start(data), max_side, max_pixels)
    finally:
        release_freed_memory(collect_garbage=False)


def explanation_overlay(
    classifier: Classifier, data: ImageInput, max_side: int = 480, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """The photo (as :func:`preview` shows it) with the heatmap of where the model looked blended over it."""
    explanation = classifier.explain(_from_start(data))
    return np.asarray(overlay(Image.fromarray(preview(data, max_side, max_pixels)), explanation))


def square_thumbnail(source: ImageInput, size: int = 200, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The photo center-cropped to a square of ``size`` pixels (for tidy grids), upright RGB (the
    memory its decode freed is given back to the system)."""
    try:
        return load_preview(_from_start(source), size, max_pixels, square=True)
    finally:
        release_freed_memory(collect_garbage=False)
