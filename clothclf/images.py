"""The one image-decoding function used by training, evaluation and serving.

Pillow only (no TensorFlow): EXIF orientation applied, any mode converted to RGB (alpha composited
on white), first frame of animations, a pixel-count limit against decompression bombs, and a plain
resize to a square ``size x size`` with bilinear filtering.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clothclf.errors import InvalidImageError, LimitExceededError

ImageInput = str | os.PathLike | bytes | bytearray | IO[bytes] | Image.Image | np.ndarray

#: Default limit on width x height of an input image (6000x4000 photos pass, 20000x20000 bombs do not).
DEFAULT_MAX_PIXELS = 50_000_000
RESAMPLE = Image.Resampling.BILINEAR


def describe(source: ImageInput) -> str:
    """A short human name for an image input, for messages and result tables."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    name = getattr(source, "name", None)
    if isinstance(name, str):
        return name
    return f"<{type(source).__name__}>"


def _open(source: ImageInput) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"{path}: no such file")
        if path.stat().st_size == 0:
            raise InvalidImageError(f"{path}: the file is empty")
        return Image.open(path)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise InvalidImageError("the upload is empty")
        return Image.open(io.BytesIO(bytes(source)))
    if hasattr(source, "read"):
        data = source.read()
        if not data:
            raise InvalidImageError(f"{describe(source)}: the file is empty")
        return Image.open(io.BytesIO(data))
    raise InvalidImageError(f"cannot read an image from a {type(source).__name__}")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        return Image.fromarray((array / peak * 255.0).round().astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        array = np.clip(np.asarray(image, dtype=np.float64), 0, 255).astype(np.uint8)
        return Image.fromarray(array).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _array_to_image(array: np.ndarray) -> Image.Image:
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise InvalidImageError(f"an image array must be HxW, HxWx3 or HxWx4, not {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def load_image(
    source: ImageInput, size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode ``source`` to an RGB ``uint8`` array of shape (size, size, 3), or full size if ``size`` is None.

    ``source`` is a path, bytes, a binary file-like object, a PIL image or an array. Raises
    :class:`InvalidImageError` for anything that is not a readable image and
    :class:`LimitExceededError` when it has more than ``max_pixels`` pixels.
    """
    name = describe(source)
    if isinstance(source, np.ndarray):
        image = _array_to_image(source)
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = _open(source)
        except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise InvalidImageError(f"{name}: not an image file Pillow can read") from exc
        except OSError as exc:
            raise InvalidImageError(f"{name}: cannot be read ({exc})") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise LimitExceededError(
            f"{name}: {width}x{height} pixels is over the limit of {max_pixels:,} pixels"
        )
    try:
        if getattr(image, "is_animated", False):
            image.seek(0)
        if size is not None and image.format == "JPEG":
            image.draft("RGB", (size, size))
        image = ImageOps.exif_transpose(image) or image
        image = _to_rgb(image)
        if size is not None:
            image = image.resize((size, size), RESAMPLE)
        return np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(f"{name}: the image data is damaged or truncated ({exc})") from exc
