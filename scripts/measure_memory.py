"""Peak memory of the decoder on hostile images: what one image adds to a process while it is decoded.

    python scripts/measure_memory.py decode                 # every kind, 49 MP, in /tmp
    python scripts/measure_memory.py decode --dir DIR --megapixels 49 --json

Each kind of image (a 49-megapixel float32 TIFF, a palette GIF with transparency, an RGBA PNG, a
6000x4000 camera JPEG, ...) is written once, a few KB to a few MB on disk, then decoded in a fresh
Python process: the process imports clothclf, reads the file's bytes, resets its peak resident
memory (``/proc/self/clear_refs``, Linux), decodes, and reports ``VmHWM - VmRSS`` before the decode
in MB. Three ways are measured: ``classify`` (``load_image(data, 224)``), ``preview``
(the Classify page's 640-pixel preview) and ``thumbnail`` (its 240-pixel square). A refused image
(over a limit) reports the error instead. The figures depend only a little on the machine; the
fast test ``tests/test_memory.py`` asserts the issue's bound (150 MB) on the same measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024

_CHILD = r"""
import ctypes, gc, json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import numpy as np
from clothclf.app import uploads as classify
from clothclf.errors import ClothclfError
from clothclf.data.images import load_image

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0

WAYS = {
    "classify": lambda data: load_image(data, 224),
    "preview": lambda data: classify.preview(data, 640),
    "thumbnail": lambda data: classify.square_thumbnail(data, 240),
}
libc = ctypes.CDLL("libc.so.6")
load_image(np.zeros((8, 8, 3), np.uint8), 4)  # warm up the code paths
for how, path in zip(sys.argv[2::2], sys.argv[3::2]):
    data = Path(path).read_bytes()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = status("VmRSS")
    try:
        shape, error = list(WAYS[how](data).shape), None
    except ClothclfError as exc:
        shape, error = None, str(exc).removeprefix("<bytes>: ")
    print(json.dumps({"added_mb": round(status("VmHWM") - before, 1), "shape": shape, "error": error}))
    del data
    gc.collect()
    libc.malloc_trim(0)  # give freed memory back, so the next decode starts from scratch
"""


def _constant(mode: str, side: int, value) -> Image.Image:
    return Image.new(mode, (side, side), value)


def _palette(side: int) -> Image.Image:
    image = Image.new("P", (side, side), 0)
    image.putpalette([255, 255, 255, 200, 30, 30] + [0] * 762)
    image.paste(1, (side // 4, side // 4, 3 * side // 4, 3 * side // 4))
    return image


def _camera_photo(width: int, height: int) -> Image.Image:
    """A photo-like picture (smooth gradients, a little noise) that compresses like a real photo."""
    tile = np.random.default_rng(0).normal(128, 40, (height // 8, width // 8, 3))
    return Image.fromarray(np.clip(tile, 0, 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)


def hostile_images(
    folder: Path, megapixels: float = 49.0, wide_megapixels: float = 28.0, skip: Collection[str] = ()
) -> dict[str, Path]:
    """Write every kind of image the measurement covers into ``folder`` (reused if already there).

    Most are ``megapixels`` large; the colour and 32-bit kinds, which take 4 bytes a pixel once
    decoded, also at ``wide_megapixels``, the most the decoder admits of them (bigger ones are refused).
    Kinds named in ``skip`` are not made.
    """
    side = int((megapixels * 1e6) ** 0.5)
    wide = int((wide_megapixels * 1e6) ** 0.5)
    mp = f"{wide * wide / 1e6:.0f} MP"
    makers: dict[str, tuple[str, Callable[[], Image.Image], dict]] = {
        f"float32 TIFF, {mp}": (
            "f32.tif",
            lambda: _constant("F", wide, 0.5),
            {"compression": "tiff_deflate"},
        ),
        f"float32 TIFF, one strip, {mp}": (
            "f32-strip.tif",
            lambda: _constant("F", wide, 0.5),
            {"compression": "tiff_deflate", "tiffinfo": {278: wide}},
        ),
        f"RGBA PNG, {mp}": ("rgba.png", lambda: _constant("RGBA", wide, (10, 200, 10, 128)), {}),
        f"RGB PNG, {mp}": ("rgb.png", lambda: _constant("RGB", wide, (10, 20, 200)), {}),
        f"RGBA WebP, {mp}": (
            "rgba.webp",
            lambda: _constant("RGBA", wide, (10, 200, 10, 128)),
            {"lossless": True},
        ),
        "RGB WebP, 7 MP": ("rgb-7mp.webp", lambda: _constant("RGB", 2700, (10, 20, 200)), {"quality": 80}),
        "float32 TIFF": ("f32.tif", lambda: _constant("F", side, 0.5), {"compression": "tiff_deflate"}),
        "int32 TIFF": ("i32.tif", lambda: _constant("I", side, 70000), {"compression": "tiff_deflate"}),
        "bilevel TIFF": ("bilevel.tif", lambda: _constant("1", side, 1), {"compression": "group4"}),
        "palette GIF, transparency": ("palette.gif", lambda: _palette(side), {"transparency": 0}),
        "RGBA PNG": ("rgba.png", lambda: _constant("RGBA", side, (10, 200, 10, 128)), {}),
        "LA PNG": ("la.png", lambda: _constant("LA", side, (90, 128)), {}),
        "RGB PNG": ("rgb.png", lambda: _constant("RGB", side, (10, 20, 200)), {}),
        "16-bit grey PNG": ("grey16.png", lambda: _constant("I;16", side, 30000), {}),
        "large JPEG": ("large.jpg", lambda: _camera_photo(side, side), {"quality": 85}),
        "camera JPEG 6000x4000": ("camera.jpg", lambda: _camera_photo(6000, 4000), {"quality": 90}),
    }
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, (filename, make, params) in makers.items():
        if kind in skip:
            continue
        path = folder / (
            filename if "mp." in filename else f"{wide if kind.endswith(mp) else side}-{filename}"
        )
        if not path.is_file():
            tmp = path.with_name(f".{path.name}.tmp")
            make().save(tmp, format=Image.registered_extensions()[path.suffix], **params)
            os.replace(tmp, path)
        paths[kind] = path
    return paths


def decode_peaks(jobs: Sequence[tuple[Path, str]]) -> list[dict]:
    """What decoding each ``(path, way)`` adds to a process's peak memory (MB), measured one after
    the other in one fresh subprocess (the peak is reset before each)."""
    args = [item for path, how in jobs for item in (how, str(path))]
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(PROJECT_ROOT), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.strip().splitlines()[-len(jobs) :]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["decode"])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "clothclf-hostile-images")
    parser.add_argument("--megapixels", type=float, default=49.0)
    parser.add_argument("--ways", default="classify,preview,thumbnail")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    images = hostile_images(args.dir, args.megapixels)
    jobs = [(kind, path, how) for kind, path in images.items() for how in args.ways.split(",")]
    rows = [
        {"kind": kind, "bytes": path.stat().st_size, "how": how, **peak}
        for (kind, path, how), peak in zip(jobs, decode_peaks([(path, how) for _, path, how in jobs]))
    ]
    for row in rows if not args.json else []:
        outcome = row["error"] or "x".join(map(str, row["shape"]))
        print(
            f"{row['kind']:30} {row['bytes'] / 1024:7.0f} KB  {row['how']:9} +{row['added_mb']:6.1f} MB  {outcome}"
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
