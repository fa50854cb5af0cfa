"""Memory measurements behind ``python scripts/measure_memory.py`` and ``tests/test_memory.py``: what
decoding one image adds to a process's peak, the hostile images that probe it, a training run's peaks
inside a memory cgroup, and the synthetic datasets and photos they use (Linux ``/proc``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clothclf.benchmarks.timing import PACKAGE_ROOT
from clothclf.runs import atomic_path

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
            with atomic_path(path) as tmp:
                make().save(tmp, format=Image.registered_extensions()[path.suffix], **params)
        paths[kind] = path
    return paths


def decode_peaks(jobs: Sequence[tuple[Path, str]]) -> list[dict]:
    """What decoding each ``(path, way)`` adds to a process's peak memory (MB), measured one after
    the other in one fresh subprocess (the peak is reset before each)."""
    args = [item for path, how in jobs for item in (how, str(path))]
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(PACKAGE_ROOT), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.strip().splitlines()[-len(jobs) :]]


#: A cheap head-only run for the synthetic dataset: tiny images, MobileNetV2 without ImageNet weights.
SYNTHETIC_TRAIN_ARGS = ("--head-only", "--epochs", "3", "--image-size", "32", "--weights", "none")


def synthetic_photos(root: Path, count: int, side: int = 16) -> Path:
    """A folder of ``count`` tiny JPEG photos in three class folders (reused if already there)."""
    if sum(1 for _ in root.rglob("*.jpg")) == count:
        return root
    rng = np.random.default_rng(0)
    for i in range(count):
        label = i % 3
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        array = rng.integers(0, 80, (side, side, 3), dtype=np.uint8)
        array[..., label] += 150
        Image.fromarray(array).save(folder / f"{i:05d}.jpg", quality=90)
    return root


class AnonymousPeak:
    """The highest anonymous memory (``RssAnon``: what the kernel cannot drop and read back from a
    file) a process reaches, sampled every 50 ms from ``/proc`` in a thread until :meth:`stop`."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.wait(0.05):
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            for line in status.splitlines():
                if line.startswith("RssAnon:"):
                    self.peak = max(self.peak, int(line.split()[1]) / 1024)

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self.done.set()
        self.thread.join()
        return self.peak


def train_under_cap(group, args: Sequence[str], env: dict[str, str], timeout: float = 3600) -> dict:
    """``clothclf train ARGS --json`` in the memory cgroup ``group``: its exit, wall time, peak RSS
    (the process's high-water mark, with the pages of TensorFlow's libraries it touched), peak
    anonymous memory (sampled) and the group's peak (RSS and page cache) and OOM kills."""
    command = [sys.executable, "-m", "clothclf", "train", *args, "--json"]
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=err, text=True, preexec_fn=group.enter
        )
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        anonymous = AnonymousPeak(process.pid)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak, not all children's
        timer.cancel()
        code = os.waitstatus_to_exitcode(status)
        process.returncode = code
        out.seek(0), err.seek(0)
        lines, errors = out.read().strip().splitlines(), err.read()
    return {
        "returncode": code,
        "seconds": round(time.monotonic() - started, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "peak_anonymous_mb": round(anonymous.stop(), 1),
        "group_peak_mb": round(group.peak_mb(), 1),
        "oom_kills": group.oom_kills(),
        "result": json.loads(lines[-1]) if code == 0 and lines else None,
        "stderr": errors[-2000:] if code else "",
    }


def camera_batch(images: dict[str, Path], folder: Path, count: int = 20) -> list[Path]:
    """``count`` files (hard links) of the 6000x4000 camera JPEG under different names: the server
    receives and holds each one separately."""
    folder.mkdir(parents=True, exist_ok=True)
    links = [folder / f"camera-{i:02d}.jpg" for i in range(count)]
    for link in links:
        if not link.exists():
            os.link(images["camera JPEG 6000x4000"], link)
    return links


def normal_photo(folder: Path) -> Path:
    """A 400x536 photo-like PNG, the size of the dataset's photos."""
    path = folder / "photo.png"
    _camera_photo(400, 536).save(path)
    return path


@dataclass(frozen=True)
class MemoryReport:
    """Server RSS (MB) after the warm-up and after each block of predictions, and any wrong answers."""

    warmup: int
    predictions: int
    sessions: int
    rss_start_mb: float
    rss_after_warmup_mb: float
    rss_samples_mb: tuple[tuple[int, float], ...]
    wrong_answers: int
    seconds: float

    @property
    def growth_mb(self) -> float:
        """RSS at the end minus RSS after the warm-up."""
        return round(self.rss_samples_mb[-1][1] - self.rss_after_warmup_mb, 1)

    @property
    def peak_growth_mb(self) -> float:
        """The highest RSS after the warm-up minus RSS after the warm-up."""
        return round(max(rss for _, rss in self.rss_samples_mb) - self.rss_after_warmup_mb, 1)
