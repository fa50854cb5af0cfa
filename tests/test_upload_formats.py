"""Files the decoder does not read get a sentence in clothclf's words: other formats (named with the
formats that are read) and PNG metadata over Pillow's limits (not "damaged")."""

from __future__ import annotations

import io

import pytest
from helpers import noisy_png
from PIL import Image, PngImagePlugin

from clothclf.app.uploads import READ_FORMATS, classify_upload, classify_uploads, unread_format_error
from clothclf.config import Limits
from clothclf.data.images import load_image
from clothclf.errors import LimitExceededError


class NeverCalled:
    """A classifier that fails the test if a refused file reaches it."""

    image_size = 16

    def predict(self, pixels, top_k):
        raise AssertionError("a file of another format was decoded")


@pytest.mark.parametrize("name", ["look.avif", "IMG_0001.HEIC", "scan.jp2", "drawing.svg", "notes.txt"])
def test_a_file_of_another_format_is_named_with_the_formats_read(name):
    result = classify_upload(NeverCalled(), name, noisy_png(), Limits())
    assert not result.ok and result.name == name
    suffix = name[name.rindex(".") :].lower()
    assert result.error == f"not an image format clothclf reads: {suffix} files are not read; it reads {READ_FORMATS}"
    for fmt in ("JPEG", "PNG", "WebP", "GIF", "BMP", "TIFF", ".jpg", ".tiff"):
        assert fmt in READ_FORMATS


def test_readable_extensions_and_names_without_one_go_to_the_decoder():
    assert unread_format_error("photo.JPG") is None and unread_format_error("camera photo") is None
    results = classify_uploads(NeverCalled(), [("a.heic", b"x"), ("b.jp2", b"y")], Limits())
    assert [r.name for r in results] == ["a.heic", "b.jp2"] and all("it reads JPEG" in r.error for r in results)


def png_with(**chunks) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, "PNG", **chunks)
    return buffer.getvalue()


def big_text() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * (2 * PngImagePlugin.MAX_TEXT_CHUNK), zip=True)
    return info


@pytest.mark.parametrize(
    "data", [png_with(icc_profile=b"\0" * (16 << 20)), png_with(pnginfo=big_text())], ids=["icc", "ztxt"]
)
def test_png_metadata_over_pillows_limit_is_said_in_our_words(data):
    with pytest.raises(LimitExceededError) as caught:
        load_image(data, 16)
    message = str(caught.value)
    assert "text or a colour profile (ICC) larger than the 1 MB clothclf reads" in message
    for internal in ("damaged", "MAX_TEXT", "PngImagePlugin", "ValueError"):
        assert internal not in message
