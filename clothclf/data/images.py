"""The one image-decoding function used by training, evaluation and serving.

Pillow only (no TensorFlow). :func:`load_image` turns a path, bytes, file object, PIL image or array
into an RGB ``uint8`` array, the same pixels whichever form the same file arrives in:

1. the pixel count is checked against ``max_pixels`` from the header, before any pixel is decoded
   (a 20000x20000 PNG of a few KB raises :class:`LimitExceededError` at once);
2. the first frame is used (animated GIF, WebP, PNG);
3. a JPEG larger than twice the target size is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
   (Pillow's ``draft``), never smaller than the target;
4. the EXIF orientation is applied;
5. any mode becomes RGB: CMYK, palette, grayscale, 16-bit; alpha is composited on white;
6. the image is resized to ``size x size`` (aspect ratio not kept) with Pillow's bilinear filter.
"""

from __future__ import annotations

import io
import os
from contextlib import nullcontext
from pathlib import Path
from typing import IO

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from clothclf.errors import InvalidImageError, LimitExceededError

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes] | Image.Image | np.ndarray

#: Default limit on width x height of an input image (6000x4000 photos pass, 20000x20000 bombs do not).
DEFAULT_MAX_PIXELS = 50_000_000
RESAMPLE = Image.Resampling.BILINEAR

_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# Pillow's errors for damaged data: OSError (truncated), SyntaxError (bad chunks), EOFError (frames),
# ValueError (unsupported conversions).
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError)


def describe(source: ImageInput) -> str:
    """A short human name for an image input, for messages and result tables."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    name = getattr(source, "filename", None) or getattr(source, "name", None)
    if isinstance(name, (str, os.PathLike)) and str(name):
        return str(name)
    return f"<{type(source).__name__}>"


def _read_bytes(source: bytes | bytearray | memoryview | IO[bytes], name: str) -> bytes:
    data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else source.read()
    if not isinstance(data, bytes):
        raise InvalidImageError(f"{name}: the file object must be opened in binary mode")
    if not data:
        raise InvalidImageError(f"{name}: the file is empty")
    return data


def _open(source: ImageInput, name: str) -> Image.Image:
    """Open (not decode) ``source``; the caller closes the result."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"{name}: {'not a file' if path.exists() else 'no such file'}")
        if path.stat().st_size == 0:
            raise InvalidImageError(f"{name}: the file is empty")
        return Image.open(path)
    if isinstance(source, (bytes, bytearray, memoryview)) or hasattr(source, "read"):
        return Image.open(io.BytesIO(_read_bytes(source, name)))
    raise InvalidImageError(f"{name}: cannot read an image from a {type(source).__name__}")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; transparent areas become white."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16"):
        array = np.asarray(image, dtype=np.float32) / 257.0
        return Image.fromarray(np.round(array).astype(np.uint8)).convert("RGB")
    if image.mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = float(array.max(initial=0.0))
        if image.mode == "I" and peak > 255:  # 16-bit data that Pillow opened as 32-bit
            array = array * (255.0 / (65535.0 if peak <= 65535 else peak))
        return Image.fromarray(np.round(np.clip(array, 0, 255)).astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _array_to_image(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise InvalidImageError(
            f"{name}: an image array must be HxW, HxWx1, HxWx3 or HxWx4, not {array.shape}"
        )
    if array.dtype != np.uint8:
        array = np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


def _check_pixels(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise LimitExceededError(
            f"{name}: {width}x{height} pixels is over the limit of {max_pixels:,} pixels"
        )


def _bomb(name: str, max_pixels: int) -> LimitExceededError:
    return LimitExceededError(
        f"{name}: over the limit of {max_pixels:,} pixels (Pillow refuses it as a possible decompression bomb)"
    )


def _decode(image: Image.Image, size: int | None) -> np.ndarray:
    """Steps 2-6 of the module docstring on an opened (possibly not yet decoded) image."""
    if image.tell() != 0:
        image.seek(0)
    if size is not None and image.format == "JPEG":
        image.draft("RGB", (size, size))  # never below (size, size); a no-op once decoded
    image.load()
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation in _ORIENTATION:
        image = image.transpose(_ORIENTATION[orientation])
    image = _to_rgb(image)
    if size is not None:
        image = image.resize((size, size), RESAMPLE)
    return np.array(image, dtype=np.uint8)


def load_image(
    source: ImageInput, size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode ``source`` to an RGB ``uint8`` array of shape (size, size, 3), or full size if ``size`` is None.

    ``source`` is a path, bytes, a binary file-like object (read from its current position), a PIL
    image or an array. A PIL image that is not yet decoded (straight from ``Image.open``) gives the
    same pixels as its file, and is decoded in place, like Pillow's own ``thumbnail``. Raises
    :class:`InvalidImageError` (naming the input) for anything that is not a readable image and
    :class:`LimitExceededError` when it has more than ``max_pixels`` pixels.
    """
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of pixels, not {size}")
    name = describe(source)
    if isinstance(source, np.ndarray):
        source = _array_to_image(source, name)
    try:
        opened = source if isinstance(source, Image.Image) else _open(source, name)
    except Image.DecompressionBombError as exc:  # Pillow's own guard, at twice its warning size
        raise _bomb(name, max_pixels) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError(f"{name}: not an image format Pillow can read") from exc
    except OSError as exc:
        raise InvalidImageError(f"{name}: cannot be read ({exc})") from exc
    owned = opened is not source  # close what we opened; a caller's PIL image stays open
    with opened if owned else nullcontext(opened) as image:
        _check_pixels(image, name, max_pixels)
        try:
            return _decode(image, size)
        except Image.DecompressionBombError as exc:  # an embedded image (e.g. in an ICO) over Pillow's guard
            raise _bomb(name, max_pixels) from exc
        except _DECODE_ERRORS as exc:
            raise InvalidImageError(f"{name}: the image data is damaged or truncated ({exc})") from exc
