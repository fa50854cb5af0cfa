"""The shared decoder: every input form, colour mode and format, the pixel limit, and bad input."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from clothclf.data import images
from clothclf.data.images import FORMATS, MAX_DECODE_MB, describe, load_image, load_preview
from clothclf.errors import ClothclfError, InvalidImageError, LimitExceededError

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB image (gradients plus a little noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    array = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=-1)
    array += rng.normal(0, 8, array.shape)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def halves(width: int, height: int, left=RED, right=BLUE, mode: str = "RGB") -> Image.Image:
    """Left half one colour, right half another."""
    image = Image.new(mode, (width, height), right)
    image.paste(left, (0, 0, width // 2, height))
    return image


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int, colour_type: int = 0) -> bytes:
    """A valid-header 8-bit PNG of ``width x height`` (grey, or RGB with ``colour_type=2``) whose data
    covers only a few rows (a few KB)."""
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    data = zlib.compress(b"\0" * (width * (3 if colour_type == 2 else 1) + 1) * 64, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
    )


def assert_close(actual: np.ndarray, colour, tolerance: int = 12) -> None:
    assert np.abs(actual.astype(int) - np.asarray(colour)).max() <= tolerance, actual.reshape(-1, 3)[:3]


# --- the same pixels whichever form the file arrives in ---------------------------------------------


@pytest.mark.parametrize(
    ("filename", "fmt", "width", "height"),
    [
        ("photo.jpg", "JPEG", 400, 533),  # the dataset's typical photo
        ("large.jpg", "JPEG", 1600, 1200),  # decoded at reduced scale (JPEG draft)
        ("photo.png", "PNG", 300, 200),
        ("photo.webp", "WEBP", 300, 200),
    ],
)
@pytest.mark.parametrize("size", [224, None])
def test_same_pixels_from_path_bytes_file_and_pil(tmp_path, filename, fmt, width, height, size):
    path = tmp_path / filename
    photo(width, height).save(path, fmt)
    expected = load_image(path, size)
    assert expected.dtype == np.uint8
    assert expected.shape == ((size, size, 3) if size else (height, width, 3))
    data = path.read_bytes()
    with path.open("rb") as handle:
        from_file = load_image(handle, size)
    with Image.open(path) as image:
        from_pil = load_image(image, size)
    for other in (load_image(str(path), size), load_image(data, size), load_image(bytearray(data), size)):
        np.testing.assert_array_equal(other, expected)
    np.testing.assert_array_equal(from_file, expected)
    np.testing.assert_array_equal(from_pil, expected)
    np.testing.assert_array_equal(load_image(io.BytesIO(data), size), expected)


def test_array_input_is_resized_like_a_decoded_file(tmp_path):
    path = tmp_path / "photo.png"
    photo(120, 90).save(path)
    full = load_image(path)
    np.testing.assert_array_equal(load_image(full, 32), load_image(path, 32))
    np.testing.assert_array_equal(load_image(full[..., 0], 16)[..., 1], load_image(full[..., 0], 16)[..., 0])
    assert load_image(full[..., :1]).shape == (90, 120, 3)
    rgba = np.dstack([full, np.zeros((90, 120), np.uint8)])  # fully transparent -> white
    assert_close(load_image(rgba, 8), WHITE, 0)
    assert load_image(full.astype(np.float32) + 300, 8).max() == 255  # floats are clipped to 0..255
    with pytest.raises(InvalidImageError, match="HxW"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    for empty in (np.zeros((0, 0, 3), np.uint8), np.zeros((0, 5, 3), np.float32)):
        with pytest.raises(InvalidImageError, match="empty"):
            load_image(empty)
    with pytest.raises(InvalidImageError, match="NaN or infinite"):
        load_image(np.full((5, 5, 3), np.nan, np.float32))


# --- modes and formats --------------------------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    with Image.open(path) as image:
        assert image.mode == "CMYK"
    pixels = load_image(path)
    assert pixels.shape == (30, 40, 3)
    assert_close(pixels, RED)


def test_grayscale_png_becomes_three_equal_channels(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(path)
    pixels = load_image(path)
    assert pixels.shape == (16, 16, 3)
    np.testing.assert_array_equal(pixels[..., 0], np.arange(256).reshape(16, 16))
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])


def test_16_bit_png_is_scaled_to_8_bits(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 65535], [32896, 1000]], dtype=np.uint16)).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")
    pixels = load_image(path)
    np.testing.assert_array_equal(pixels[..., 0], [[0, 255], [128, 4]])
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 1])


def test_palette_gif_transparency_becomes_white(tmp_path):
    image = Image.new("P", (20, 20), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black (transparent), 1 red
    image.paste(1, (5, 5, 15, 15))
    path = tmp_path / "sticker.gif"
    image.save(path, transparency=0)
    pixels = load_image(path)
    assert_close(pixels[0, 0], WHITE, 0)
    assert_close(pixels[10, 10], RED, 0)


def test_rgba_png_transparent_area_becomes_white(tmp_path):
    array = np.zeros((10, 20, 4), np.uint8)
    array[:, 10:] = (0, 255, 0, 255)  # right half opaque green, left half transparent black
    array[0, 0] = (0, 0, 0, 128)  # half-transparent black over white is mid grey
    path = tmp_path / "cutout.png"
    Image.fromarray(array).save(path)
    pixels = load_image(path)
    assert_close(pixels[5, :10], WHITE, 0)
    assert_close(pixels[5, 10:], GREEN, 0)
    assert_close(pixels[0, 0], (127, 127, 127), 1)


@pytest.mark.parametrize("mode", ["LA", "PA", "1", "YCbCr", "I", "F"])
def test_other_modes_become_rgb(mode):
    source = halves(8, 4, (200, 200, 200), (50, 50, 50)).convert("L")
    pixels = load_image(source.convert(mode))
    assert pixels.shape == (4, 8, 3) and pixels.dtype == np.uint8
    assert pixels[0, 0].mean() > pixels[0, -1].mean()


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animation_gives_its_first_frame(tmp_path, fmt):
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow was built without WebP")
    frames = [Image.new("RGB", (16, 16), colour) for colour in (RED, BLUE, GREEN)]
    path = tmp_path / f"animated.{fmt.lower()}"
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    with Image.open(path) as image:
        assert image.n_frames == 3
        image.seek(2)  # a caller's image left on another frame still gives the first
        assert_close(load_image(image, 8), RED, 0)
    assert_close(load_image(path), RED, 0)


def test_webp(tmp_path):
    path = tmp_path / "photo.webp"
    halves(32, 16).save(path, lossless=True)
    pixels = load_image(path)
    assert_close(pixels[:, :16], RED, 0)
    assert_close(pixels[:, 16:], BLUE, 0)


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    halves(60, 30).save(path, exif=exif, quality=95)
    pixels = load_image(path)
    assert pixels.shape == (60, 30, 3)  # portrait once rotated
    assert_close(pixels[5:25, 10:20], RED)  # what was on the left is now on top
    assert_close(pixels[35:55, 10:20], BLUE)
    with Image.open(path) as image:
        np.testing.assert_array_equal(load_image(image, 32), load_image(path, 32))


def test_one_pixel_image(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), BLUE).save(path)
    assert load_image(path).shape == (1, 1, 3)
    assert_close(load_image(path, 32), BLUE, 0)


def test_large_jpeg_is_decoded_at_reduced_scale(tmp_path):
    path = tmp_path / "camera.jpg"
    halves(6000, 4000).save(path, quality=90)
    pixels = load_image(path, 224)
    assert pixels.shape == (224, 224, 3)
    assert_close(pixels[:, :100], RED)
    assert_close(pixels[:, 124:], BLUE)
    with Image.open(path) as image:
        np.testing.assert_array_equal(load_image(image, 224), pixels)
    np.testing.assert_array_equal(load_image(path.read_bytes(), 224), pixels)


def test_upper_case_extension(tmp_path):
    path = tmp_path / "PHOTO.JPG"
    halves(40, 20).save(path)
    assert load_image(path, 16).shape == (16, 16, 3)


def test_files_we_open_are_closed(tmp_path):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to count open files")
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, BLUE)]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        load_image(path, 4)
    assert len(os.listdir("/proc/self/fd")) == before


# --- limits -----------------------------------------------------------------------------------------


def test_decompression_bomb_is_refused_without_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(20000, 20000))
    assert path.stat().st_size < 10_000
    # The data covers 64 rows: decoding would fail as truncated, so LimitExceededError proves we did not.
    with pytest.raises(LimitExceededError, match="bomb.png"):
        load_image(path, 224)
    with pytest.raises(LimitExceededError):
        load_image(path.read_bytes())


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(("width", "height"), [(9000, 9000), (10000, 10000)])
def test_images_over_the_pixel_limit_are_refused(tmp_path, width, height):
    path = tmp_path / "huge.png"
    path.write_bytes(png_bomb(width, height))
    with pytest.raises(LimitExceededError, match=f"huge.png: {width}x{height} pixels"):
        load_image(path)


def test_custom_pixel_limit():
    image = encode(Image.new("RGB", (100, 60)), "PNG")
    assert load_image(image, max_pixels=6000).shape == (60, 100, 3)
    with pytest.raises(LimitExceededError, match="100x60 pixels is over the limit of 5,999"):
        load_image(image, max_pixels=5999)
    with pytest.raises(LimitExceededError):
        load_image(np.zeros((60, 100, 3), np.uint8), max_pixels=5999)


# --- bad input ---------------------------------------------------------------------------------------


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.jpg", encode(photo(16, 16), "JPEG"))
    return buffer.getvalue()


BAD_FILES = {
    "empty.jpg": b"",
    "notes.jpg": b"just some text, not a picture\n",
    "page.jpg": b"<!DOCTYPE html><html><body><img src='x.jpg'></body></html>",
    "truncated.jpg": encode(photo(64, 64), "JPEG")[:600],
    "header-only.png": b"\x89PNG\r\n\x1a\n",
    "archive.png": _zip_bytes(),
    "drawing.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
}


@pytest.mark.parametrize("filename", sorted(BAD_FILES))
def test_bad_files_raise_invalid_image_naming_the_file(tmp_path, filename):
    path = tmp_path / filename
    path.write_bytes(BAD_FILES[filename])
    with pytest.raises(InvalidImageError, match=filename) as caught:
        load_image(path, 32)
    assert isinstance(caught.value, ValueError)
    with path.open("rb") as handle, pytest.raises(InvalidImageError, match=filename):
        load_image(handle, 32)
    with pytest.raises(InvalidImageError, match="<bytes>"):
        load_image(BAD_FILES[filename], 32)


def test_missing_path_and_folder(tmp_path):
    with pytest.raises(InvalidImageError, match="missing.jpg: no such file"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(InvalidImageError, match=f"{tmp_path}: not a file"):
        load_image(tmp_path)


def test_text_mode_file_and_unsupported_type(tmp_path):
    path = tmp_path / "photo.png"
    photo(8, 8).save(path)
    with path.open("r", encoding="latin-1") as handle, pytest.raises(InvalidImageError, match="binary mode"):
        load_image(handle)
    with pytest.raises(InvalidImageError, match="int"):
        load_image(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "progressive"])
def test_any_truncation_is_an_image_or_invalid_image_error(fmt):
    if fmt == "progressive":
        data = encode(photo(96, 64, seed=1), "JPEG", progressive=True)
    else:
        data = encode(photo(96, 64, seed=1), fmt)
    for cut in np.linspace(1, len(data) - 1, 24).astype(int):
        try:
            pixels = load_image(data[:cut], 16)
        except ClothclfError as exc:
            assert isinstance(exc, InvalidImageError), exc
        else:
            assert pixels.shape == (16, 16, 3)


def test_describe():
    assert describe(Path("a/b.jpg")) == str(Path("a/b.jpg"))
    assert describe(b"...") == "<bytes>"
    named = io.BytesIO(b"")
    named.name = "upload.png"
    assert describe(named) == "upload.png"
    assert describe(np.zeros(1)) == "<ndarray>"


# --- bounded memory: reduce before converting, refuse what would not fit ----------------------------


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "I;16", "I", "F", "1", "CMYK"])
def test_large_images_are_converted_in_bands_and_reduced_exactly(monkeypatch, mode):
    """Converting band by band and box-reducing each band gives exactly what converting the whole
    image and then reducing it gives (the reference below), for every mode."""
    rng = np.random.default_rng(3)
    array = rng.integers(0, 255, (900, 1000, 4), dtype=np.uint8)
    base = Image.fromarray(array, "RGBA")
    source = {
        "P": base.convert("RGB").quantize(64),
        "I;16": Image.fromarray(array[..., 0].astype(np.uint16) * 257),
        "I": Image.fromarray(array[..., 0].astype(np.int32) * 200),
        "F": Image.fromarray(array[..., 0].astype(np.float32) / 1.5),
    }.get(mode) or base.convert(mode)
    if mode == "P":
        source.info["transparency"] = 3
    monkeypatch.setattr(images, "_BAND_PIXELS", 7 * 1000)  # many bands, the last one partial
    factor = 1000 // (2 * 224)
    assert factor == 2
    peak = float(source.getextrema()[1]) if mode == "I" else 0.0
    expected = images._to_rgb(source.copy(), peak).reduce(factor).resize((224, 224), images.RESAMPLE)
    np.testing.assert_array_equal(load_image(source, 224), np.asarray(expected))


def test_small_images_decode_as_before(tmp_path):
    """Below twice the target size nothing is reduced: the result is the plain convert-and-resize."""
    image = Image.fromarray(np.random.default_rng(4).integers(0, 255, (400, 440, 4), dtype=np.uint8))
    path = tmp_path / "cutout.png"
    image.save(path)
    expected = images._to_rgb(image).resize((224, 224), images.RESAMPLE)
    np.testing.assert_array_equal(load_image(path, 224), np.asarray(expected))


def test_colour_image_needing_too_much_memory_is_refused_before_decoding(tmp_path):
    path = tmp_path / "wide.png"
    path.write_bytes(png_bomb(6000, 6000, colour_type=2))  # 36 MP: 137 MB once decoded as RGB
    with pytest.raises(
        LimitExceededError, match=f"wide.png: 6000x6000 RGB pixels need 137 MB .* {MAX_DECODE_MB} MB"
    ):
        load_image(path, 224)
    grey = tmp_path / "grey.png"
    grey.write_bytes(png_bomb(6000, 6000))  # the same size in grey needs 34 MB: decoded
    assert load_image(grey, 224).shape == (224, 224, 3)


def test_previews_keep_the_aspect_ratio_and_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    halves(3000, 1500).save(path, exif=exif, quality=95)
    pixels = load_preview(path, 300)
    assert pixels.shape == (300, 150, 3)  # portrait once rotated, long side 300
    assert_close(pixels[20:130, 40:110], RED)
    assert load_preview(path, 120, square=True).shape == (120, 120, 3)
    assert load_preview(encode(halves(40, 20), "PNG"), 300).shape == (20, 40, 3)  # never enlarged


# --- only the listed formats, and every error contained ------------------------------------------------


@pytest.mark.parametrize("fmt", ["PCX", "TGA", "PPM", "ICO", "DDS", "SGI", "IM", "QOI", "EPS"])
def test_formats_the_app_does_not_list_are_refused(fmt):
    data = encode(Image.new("RGB", (16, 16), RED), fmt)
    with pytest.raises(InvalidImageError, match="not an image format clothclf reads"):
        load_image(data, 8)


def test_oversized_png_text_chunk_is_the_files_own_error():
    text = png_chunk(b"zTXt", b"comment\0\0" + zlib.compress(b"x" * (8 * 1024 * 1024)))
    data = encode(photo(16, 16), "PNG")
    hostile = data[:33] + text + data[33:]  # after IHDR
    with pytest.raises(LimitExceededError, match="text or a colour profile .ICC. larger than the 1 MB"):
        load_image(hostile, 8)  # not "damaged": the file is well formed, its metadata too large


def _fuzz_seeds() -> list[bytes]:
    """Small valid files of every listed format, in several modes and encodings."""
    rgba = Image.fromarray(np.random.default_rng(5).integers(0, 255, (24, 32, 4), dtype=np.uint8))
    seeds = [
        encode(rgba.convert("RGB"), "JPEG"),
        encode(rgba.convert("RGB"), "JPEG", progressive=True),
        encode(rgba.convert("CMYK"), "JPEG"),
        encode(rgba, "PNG"),
        encode(rgba.convert("P"), "PNG", transparency=2),
        encode(rgba.convert("I;16"), "PNG"),
        encode(rgba.convert("P"), "GIF", transparency=0),
        encode(rgba.convert("RGB"), "BMP"),
        encode(rgba.convert("P"), "BMP"),
        encode(rgba.convert("F"), "TIFF", compression="tiff_deflate"),
        encode(rgba.convert("1"), "TIFF", compression="group4"),
        encode(rgba, "TIFF", compression="tiff_lzw"),
        encode(rgba.convert("RGB"), "TIFF", compression="jpeg"),
    ]
    if features.check("webp"):
        seeds += [encode(rgba, "WEBP", lossless=True), encode(rgba.convert("RGB"), "WEBP")]
    return seeds


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::PIL.Image.DecompressionBombWarning")
def test_fuzzed_files_of_every_format_raise_only_clothclf_errors():
    """Bounded fuzzing (seeded): byte flips, cuts, repeats and header swaps of valid files. Each
    must give an image or a clothclf error naming nothing else; no other exception escapes."""
    rng = np.random.default_rng(11)
    seeds = _fuzz_seeds()
    outcomes = {"image": 0, "error": 0}
    for i in range(1500):
        data = bytearray(seeds[i % len(seeds)])
        kind = i % 4
        if kind == 0:  # flip a few bytes anywhere
            for position in rng.integers(0, len(data), rng.integers(1, 8)):
                data[position] = int(rng.integers(0, 256))
        elif kind == 1:  # flip bytes in the header, where sizes and modes live
            for position in rng.integers(0, min(len(data), 64), rng.integers(1, 4)):
                data[position] = int(rng.integers(0, 256))
        elif kind == 2:  # cut and repeat a stretch
            start = int(rng.integers(0, len(data)))
            data = data[:start] + data[start : start + int(rng.integers(1, 200))] * 3
        else:  # the body of one format behind the header of another
            other = seeds[int(rng.integers(0, len(seeds)))]
            data = data[:16] + bytearray(other[16:])
        try:
            pixels = load_image(bytes(data), 16)
        except ClothclfError:
            outcomes["error"] += 1
        else:
            assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
            outcomes["image"] += 1
    assert outcomes["image"] > 20 and outcomes["error"] > 20, outcomes


def test_formats_match_the_extensions_the_app_lists():
    from clothclf.app.uploads import UPLOAD_TYPES
    from clothclf.data.datasets import IMAGE_EXTENSIONS

    listed = {Image.registered_extensions()[f".{ext}"] for ext in UPLOAD_TYPES}
    assert listed == set(FORMATS)
    assert {Image.registered_extensions()[ext] for ext in IMAGE_EXTENSIONS} == set(FORMATS)
