"""The one image-decoding function used by training, evaluation and serving.

Pillow only (no TensorFlow). :func:`load_image` turns a path, bytes, file object, PIL image or array
into an RGB ``uint8`` array, the same pixels whichever form the same file arrives in;
:func:`load_preview` makes the pictures the app shows the same way. Memory stays bounded for any
image within the limits (a few hundred KB of PNG can hold 49 megapixels):

1. only the formats the app and CLI list are opened (:data:`FORMATS`); the pixel count is checked
   against ``max_pixels`` and the memory a full-resolution decode needs against
   :data:`MAX_DECODE_MB`, from the header, before any pixel is decoded;
2. the first frame is used (animated GIF, WebP, PNG);
3. a JPEG larger than twice the target size is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
   (Pillow's ``draft``), never smaller than the target;
4. any mode becomes RGB (CMYK, palette, grayscale, 16-bit, 32-bit; alpha composited on white) a band
   of rows at a time, each band box-reduced (``Image.reduce``) while the image stays at least twice
   the target size, so no full-size temporary is ever made;
5. the EXIF orientation is applied;
6. the image is resized to ``size x size`` (aspect ratio not kept) with Pillow's bilinear filter.

Every error an image can raise, of any kind, becomes that file's :class:`InvalidImageError` or
:class:`LimitExceededError` naming it (one bad file never stops a batch or a training run).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import IO

import numpy as np
from PIL import ExifTags, Image, ImageOps, PngImagePlugin, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

from clothclf.config import MB
from clothclf.errors import ClothclfError, InvalidImageError, LimitExceededError

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes] | Image.Image | np.ndarray

#: Default limit on width x height of an input image (6000x4000 photos pass, 20000x20000 bombs do not).
DEFAULT_MAX_PIXELS = 50_000_000
#: Most memory (MB) one full-resolution decode may take: about 30 megapixels of colour PNG, TIFF or
#: WebP, 50 of grey or palette images; a JPEG counts at the scale it is decoded at.
MAX_DECODE_MB = 120
#: The Pillow formats the decoder opens (the ones the app and CLI list; phones' MPO files are JPEG).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
RESAMPLE = Image.Resampling.BILINEAR

#: Pixels converted to RGB at a time (a band of rows; float temporaries stay a few MB).
_BAND_PIXELS = 1 << 18
#: Bytes per pixel of Pillow's in-memory modes (every other mode takes 4).
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
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

#: Given the stored width and height, the smallest size the decoded image is needed at (None: full).
Target = Callable[[int, int], tuple[int, int]] | None


def describe(source: ImageInput) -> str:
    """A short human name for an image input, for messages and result tables."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    name = getattr(source, "filename", None) or getattr(source, "name", None)
    if isinstance(name, (str, os.PathLike)) and str(name):
        return str(name)
    return f"<{type(source).__name__}>"


def _read_bytes(
    source: bytes | bytearray | memoryview | IO[bytes], name: str
) -> bytes | bytearray | memoryview:
    data = source if isinstance(source, (bytes, bytearray, memoryview)) else source.read()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidImageError(f"{name}: the file object must be opened in binary mode")
    if not len(data):
        raise InvalidImageError(f"{name}: the file is empty")
    return data


def _at_start(source: object) -> bool:
    """Whether ``source`` is an in-memory binary file (``io.BytesIO``, an upload) at its start. Its
    size is found by seeking: ``getbuffer()`` would copy the bytes of a ``BytesIO`` made from bytes
    (as Streamlit's uploaded files are), doubling every upload for as long as it is kept."""
    if not isinstance(source, io.BytesIO) or source.tell() != 0:
        return False
    size = source.seek(0, io.SEEK_END)
    source.seek(0)
    return size > 0


def _open(source: ImageInput, name: str) -> Image.Image:
    """Open (not decode) ``source``; the caller closes the result."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"{name}: {'not a file' if path.exists() else 'no such file'}")
        if path.stat().st_size == 0:
            raise InvalidImageError(f"{name}: the file is empty")
        return Image.open(path, formats=FORMATS)
    if _at_start(source):  # read in place (an upload held by the server is not copied)
        return Image.open(source, formats=FORMATS)
    if isinstance(source, (bytes, bytearray, memoryview)) or hasattr(source, "read"):
        return Image.open(io.BytesIO(_read_bytes(source, name)), formats=FORMATS)
    raise InvalidImageError(f"{name}: cannot read an image from a {type(source).__name__}")


def _grey_levels(image: Image.Image, peak: float) -> Image.Image:
    """A 16- or 32-bit integer or float grey image as 8-bit ``L`` (``peak``: the whole image's maximum)."""
    if image.mode.startswith("I;16"):
        array = np.asarray(image, dtype=np.float32) / 257.0
        return Image.fromarray(np.round(array).astype(np.uint8))
    array = np.asarray(image, dtype=np.float64)
    if image.mode == "I" and peak > 255:  # 16-bit data that Pillow opened as 32-bit
        array = array * (255.0 / (65535.0 if peak <= 65535 else peak))
    return Image.fromarray(np.round(np.clip(array, 0, 255)).astype(np.uint8))


def _to_rgb(image: Image.Image, peak: float = 0.0) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; transparent areas become white."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        return _grey_levels(image, peak).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _reduced_rgb(image: Image.Image, factor: int) -> Image.Image:
    """:func:`_to_rgb` of a decoded image box-reduced ``factor`` times, converted a band of rows at a
    time, so memory is the image plus its reduced copy plus one band (not a full-size RGBA copy)."""
    if image.mode == "RGB":
        return image if factor == 1 else image.reduce(factor)
    width, height = image.size
    peak = float(image.getextrema()[1]) if image.mode == "I" else 0.0
    rows = max(1, _BAND_PIXELS // (width * factor)) * factor
    if rows >= height and factor == 1:
        return _to_rgb(image, peak)
    out = Image.new("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
    for top in range(0, height, rows):
        band = _to_rgb(image.crop((0, top, width, min(top + rows, height))), peak)
        out.paste(band.reduce(factor) if factor > 1 else band, (0, top // factor))
    return out


def _array_to_image(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise InvalidImageError(
            f"{name}: an image array must be HxW, HxWx1, HxWx3 or HxWx4, not {array.shape}"
        )
    if array.size == 0:
        raise InvalidImageError(f"{name}: the image array is empty ({array.shape})")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
            raise InvalidImageError(f"{name}: the image array holds NaN or infinite values")
        array = np.clip(array, 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


def _check_pixels(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise LimitExceededError(
            f"{name}: {width}x{height} pixels is over the limit of {max_pixels:,} pixels"
        )


def _decode_bytes(image: Image.Image) -> int:
    """The memory Pillow needs to decode an opened image at its current (drafted) size: its pixels,
    plus libtiff's largest strip or tile for TIFF, and four times the pixels for WebP (libwebp's canvas
    and previous frame, Pillow's copy of the bytes and the image; measured)."""
    width, height = image.size
    total = width * height * _BYTES_PER_PIXEL.get(image.mode, 4)
    if image.format == "WEBP":
        total *= 4
    if image.format == "TIFF":
        tags = getattr(image, "tag_v2", {})
        rows = min(int(tags.get(278, height) or height), height)  # RowsPerStrip
        chunk_w, chunk_h = int(tags.get(322, width) or width), int(tags.get(323, rows) or rows)  # tiles
        total += chunk_w * chunk_h * _BYTES_PER_PIXEL.get(image.mode, 4)
    return total


def _check_decode_memory(image: Image.Image, name: str) -> None:
    not_decoded = getattr(image, "_im", None) is None  # Pillow's pixel storage, made by load()
    if not_decoded and _decode_bytes(image) > MAX_DECODE_MB * MB:
        width, height = image.size
        raise LimitExceededError(
            f"{name}: {width}x{height} {image.mode} pixels need {_decode_bytes(image) / MB:.0f} MB to decode, "
            f"over the limit of {MAX_DECODE_MB} MB per image (save it as a JPEG or scale it down)"
        )


def _bomb(name: str, max_pixels: int) -> LimitExceededError:
    return LimitExceededError(
        f"{name}: over the limit of {max_pixels:,} pixels (Pillow refuses it as a possible decompression bomb)"
    )


def _reduction(size: tuple[int, int], target: tuple[int, int] | None) -> int:
    """The largest box-reduction factor that keeps the image at least twice ``target`` in each side."""
    if target is None:
        return 1
    return max(1, min(size[0] // (2 * max(target[0], 1)), size[1] // (2 * max(target[1], 1))))


def _decode(image: Image.Image, name: str, target: Target) -> Image.Image:
    """Steps 2-5 of the module docstring on an opened image: upright RGB, at least ``target`` in size."""
    if image.tell() != 0:
        image.seek(0)
    wanted = None if target is None else target(*image.size)
    if wanted is not None and isinstance(image, JpegImageFile):
        image.draft("RGB", wanted)  # never below wanted; a no-op once decoded
    _check_decode_memory(image, name)
    image.load()
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    image = _reduced_rgb(image, _reduction(image.size, wanted))
    if orientation in _ORIENTATION:
        image = image.transpose(_ORIENTATION[orientation])
    return image


def _load(
    source: ImageInput, max_pixels: int, target: Target, finish: Callable[[Image.Image], Image.Image]
) -> np.ndarray:
    """Open, check, decode and ``finish`` ``source``; every error becomes a clothclf error naming it."""
    name = describe(source)
    try:
        if isinstance(source, np.ndarray):
            source = _array_to_image(source, name)
        opened = source if isinstance(source, Image.Image) else _open(source, name)
        owned = opened is not source  # close what we opened; a caller's PIL image stays open
        with opened if owned else nullcontext(opened) as image:
            _check_pixels(image, name, max_pixels)
            return np.array(finish(_decode(image, name, target)), dtype=np.uint8)
    except ClothclfError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own guard, at twice its warning size
        raise _bomb(name, max_pixels) from exc
    except UnidentifiedImageError as exc:
        kinds = ", ".join(FORMATS)
        raise InvalidImageError(f"{name}: not an image format clothclf reads ({kinds})") from exc
    except MemoryError as exc:
        raise LimitExceededError(f"{name}: not enough memory to decode this image") from exc
    except ValueError as exc:
        if _metadata_too_large(exc):
            raise LimitExceededError(
                f"{name}: the PNG holds text or a colour profile (ICC) larger than the "
                f"{PngImagePlugin.MAX_TEXT_CHUNK // MB} MB clothclf reads (save the picture again without "
                "its metadata, or as a JPEG)"
            ) from exc
        raise _damaged(name, exc) from exc
    except Exception as exc:  # the boundary: whatever Pillow or a codec raises is this file's error
        raise _damaged(name, exc) from exc


def _metadata_too_large(exc: ValueError) -> bool:
    """Whether Pillow refused a PNG's text or ICC chunk for its size (MAX_TEXT_CHUNK, MAX_TEXT_MEMORY):
    a well-formed file whose metadata is over Pillow's limit, not a damaged one."""
    return any(limit in str(exc) for limit in ("MAX_TEXT_CHUNK", "MAX_TEXT_MEMORY"))


def _damaged(name: str, exc: Exception) -> InvalidImageError:
    return InvalidImageError(f"{name}: the image data is damaged or truncated ({type(exc).__name__}: {exc})")


def load_image(
    source: ImageInput, size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode ``source`` to an RGB ``uint8`` array of shape (size, size, 3), or full size if ``size`` is None.

    ``source`` is a path, bytes, a binary file-like object (read from its current position), a PIL
    image or an array. A PIL image that is not yet decoded (straight from ``Image.open``) gives the
    same pixels as its file, and is decoded in place, like Pillow's own ``thumbnail``. Raises
    :class:`InvalidImageError` (naming the input) for anything that is not a readable image and
    :class:`LimitExceededError` when it has more than ``max_pixels`` pixels or needs more than
    :data:`MAX_DECODE_MB` to decode.
    """
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of pixels, not {size}")
    if size is None:
        return _load(source, max_pixels, None, lambda image: image)
    return _load(
        source, max_pixels, lambda w, h: (size, size), lambda image: image.resize((size, size), RESAMPLE)
    )


def _contained(width: int, height: int, side: int) -> tuple[int, int]:
    scale = min(side / width, side / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def load_preview(
    source: ImageInput, max_side: int, max_pixels: int = DEFAULT_MAX_PIXELS, *, square: bool = False
) -> np.ndarray:
    """The picture upright as RGB, at most ``max_side`` on either side (never enlarged), or with
    ``square`` center-cropped to a ``max_side`` square; decoded like :func:`load_image`, reduced early."""
    if max_side < 1:
        raise ValueError(f"max_side must be a positive number of pixels, not {max_side}")
    if square:
        return _load(
            source,
            max_pixels,
            lambda w, h: (max_side, max_side),
            lambda image: ImageOps.fit(image, (max_side, max_side), RESAMPLE),
        )
    return _load(
        source,
        max_pixels,
        lambda w, h: _contained(w, h, max_side),
        lambda image: image.resize(_contained(*image.size, max_side), RESAMPLE),
    )
