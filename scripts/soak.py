"""Soak: the real app in a memory cgroup, visited again and again by a browser uploading hostile images.

    python scripts/soak.py --visits 20 --limit-mb 1024 --after-s 180    # the issue's run (~25 min)
    python scripts/soak.py --visits 3 --after-s 0 --json                # a quick look
    python scripts/soak.py --cost                                       # what the allocator settings cost

``streamlit run streamlit_app.py`` with the shipped model starts inside a fresh memory cgroup (root on
Linux; tests/memcap.py). Headless Chromium (outside the group) first opens the Classify page once
classifying two ordinary photos and waits until that session has ended (the idle baseline: the model
loaded and run once), then makes ``--visits`` visits, each a new browser context (a new Streamlit
session) that uploads the whole hostile corpus at once, waits for the answers and closes. After each visit the script reads the group's memory (``usage``: RSS and page
cache, what the container's limit counts; ``anon``: what cannot be dropped) and the server's RSS; then
it waits ``--after-s`` seconds (past Streamlit's ``server.disconnectedSessionTTL``, 120 s by default)
and reads them again. It prints every figure, the group's peak and its OOM kills.

The corpus (:func:`hostile_corpus`): every image of ``scripts/measure_memory.py``'s decode table
(49-megapixel 16-bit/LA/RGBA PNG, palette GIF, bilevel/float32/int32 TIFF, 28-megapixel colour images,
camera JPEGs) and a CMYK TIFF, JPEGs with a million COM or 250,000 APP1 segments, a 16 MB ICC profile
in a JPEG and in a PNG, a 3000-page TIFF and a 5000-frame GIF. ``tests/test_soak.py`` runs fewer
visits and asserts the bounds.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
sys.path.insert(0, str(PROJECT_ROOT))

from clothclf.benchmarks.memory import hostile_images, normal_photo  # noqa: E402
from clothclf.benchmarks.timing import rss_mb  # noqa: E402
from clothclf.runs import atomic_path  # noqa: E402

MB = 1024 * 1024
#: Seconds one visit may take to be answered on a slow, busy machine.
VISIT_TIMEOUT_MS = 600_000


def _small_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def jpeg_with_segments(marker: int, count: int, payload: bytes = b"") -> bytes:
    """A small valid JPEG with ``count`` extra segments ``0xFF marker`` (each holding ``payload``)
    right after its start marker: every one is parsed when the file is opened."""
    jpeg = _small_jpeg()
    segment = struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload
    return jpeg[:2] + segment * count + jpeg[2:]


def _icc_image(fmt: str) -> bytes:
    buffer = io.BytesIO()
    profile = b"\0" * (16 * MB)
    Image.new("RGB", (64, 48), (40, 40, 200)).save(buffer, fmt, icc_profile=profile)
    return buffer.getvalue()


def _frames(fmt: str, count: int) -> bytes:
    """A ``count``-frame image of 16x16 grey frames, each with one white pixel elsewhere (no two alike)."""
    frames = [Image.new("L", (16, 16), 0) for _ in range(count)]
    for i, frame in enumerate(frames):
        frame.putpixel((i % 16, (i // 16) % 16), 255)
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def _cmyk_tiff() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (7000, 7000), (10, 20, 30, 40)).save(buffer, "TIFF", compression="tiff_deflate")
    return buffer.getvalue()


#: The corpus's images beyond measure_memory's: file name -> how to make its bytes.
EXTRA_IMAGES: dict[str, Callable[[], bytes]] = {
    "cmyk-49mp.tif": _cmyk_tiff,
    "million-com.jpg": lambda: jpeg_with_segments(0xFE, 1_000_000),
    "app1-250k.jpg": lambda: jpeg_with_segments(0xE1, 250_000, b"http://ns.adobe.com/xap/1.0/\0" + b"x" * 32),
    "icc-16mb.jpg": lambda: _icc_image("JPEG"),
    "icc-16mb.png": lambda: _icc_image("PNG"),
    "pages-3000.tif": lambda: _frames("TIFF", 3000),
    "frames-5000.gif": lambda: _frames("GIF", 5000),
}


def hostile_corpus(folder: Path, skip: Collection[str] = ()) -> list[Path]:
    """Write the corpus into ``folder`` (reused if already there); its paths. Kinds of
    ``hostile_images`` and names of :data:`EXTRA_IMAGES` in ``skip`` are left out."""
    paths = list(hostile_images(folder, skip=skip).values())
    for name, make in EXTRA_IMAGES.items():
        if name in skip:
            continue
        path = folder / name
        if not path.is_file():
            with atomic_path(path) as tmp:
                tmp.write_bytes(make())
        paths.append(path)
    return paths


@dataclass
class GroupMemory:
    """Reads a memory cgroup's current use (v1 or v2) in MB."""

    folder: Path
    version: int

    def _read(self, name: str) -> str:
        return (self.folder / name).read_text()

    def usage_mb(self) -> float:
        """RSS and page cache of the group: what its limit counts."""
        return int(self._read("memory.usage_in_bytes" if self.version == 1 else "memory.current")) / MB

    def anon_mb(self) -> float:
        """Anonymous memory of the group (``rss`` in v1's memory.stat, ``anon`` in v2's)."""
        key = "rss" if self.version == 1 else "anon"
        stats = dict(line.split() for line in self._read("memory.stat").splitlines())
        return int(stats[key]) / MB


@dataclass
class Soak:
    """What one soak measured (MB; ``visits``: one row per visit, then the wait after the last)."""

    limit_mb: int
    corpus_files: int
    corpus_mb: float
    idle: dict = field(default_factory=dict)
    visits: list[dict] = field(default_factory=list)
    after: list[dict] = field(default_factory=list)
    peak_mb: float = 0.0
    oom_kills: int = 0
    alive: bool = True
    seconds: float = 0.0


def _reading(group: GroupMemory, pid: int, **extra) -> dict:
    return {
        **extra,
        "usage_mb": round(group.usage_mb(), 1),
        "anon_mb": round(group.anon_mb(), 1),
        "server_rss_mb": rss_mb(pid),
    }


def _visit(browser, url: str, files: Sequence[Path]) -> str:
    """One visitor: a new session opens the Classify page, uploads ``files`` at once, waits for the
    answers and leaves. What the page said about the batch."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(VISIT_TIMEOUT_MS)  # a busy machine is slow, not broken
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("h1")
        if files:
            page.locator('input[type="file"]').first.set_input_files(files=[str(f) for f in files])
            done = page.get_by_text("photos classified")
            done.wait_for()
            page.get_by_text("Download results (CSV)").wait_for()  # the page's last element: drawn whole
        page.wait_for_timeout(500)
        page.wait_for_selector('[data-testid="stStatusWidget"]', state="hidden")
        return done.first.inner_text().strip() if files else ""
    finally:
        context.close()


def soak(
    limit_mb: int,
    corpus: Sequence[Path],
    visits: int,
    after_s: float,
    workdir: Path,
    report: Callable[[dict], None] = lambda row: None,
    idle_wait_s: float = 75.0,
    session_ttl_s: int | None = None,
) -> Soak:
    """Run the soak described in the module docstring; ``report`` sees each reading as it is taken.
    ``idle_wait_s``: how long the warm-up session is given to end (the app's session TTL and sweep);
    ``session_ttl_s``: ``server.disconnectedSessionTTL`` for this server (None: the app's config)."""
    from load_test import CHROMIUM, CHROMIUM_ARGS, server_env, streamlit_server
    from playwright.sync_api import sync_playwright

    from tests.memcap import MemoryCgroup

    started = time.monotonic()
    result = Soak(limit_mb, len(corpus), round(sum(p.stat().st_size for p in corpus) / MB, 1))
    env = server_env(PROJECT_ROOT / "models" / "default", workdir / "app")
    if session_ttl_s is not None:
        env["STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL"] = str(session_ttl_s)
    warmup = [normal_photo(workdir), workdir / "photo-copy.png"]
    if not warmup[1].exists():
        os.link(warmup[0], warmup[1])
    with MemoryCgroup.create(limit_mb) as cgroup:
        group = GroupMemory(cgroup.folder, cgroup.version)
        with streamlit_server(env, preexec_fn=cgroup.enter) as server, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            _visit(browser, server.url, warmup)
            time.sleep(idle_wait_s)
            result.idle = _reading(group, server.pid, step="idle")
            report(result.idle)
            for number in range(1, visits + 1):
                answer = _visit(browser, server.url, corpus)
                result.visits.append(_reading(group, server.pid, step=f"visit {number}", answer=answer))
                report(result.visits[-1])
            browser.close()
            waited = 0.0
            while waited < after_s:
                time.sleep(min(30.0, after_s - waited))
                waited = min(after_s, waited + 30.0)
                result.after.append(_reading(group, server.pid, step=f"{waited:.0f} s after"))
                report(result.after[-1])
            result.alive = server_alive(server.pid)
        result.peak_mb, result.oom_kills = round(cgroup.peak_mb(), 1), cgroup.oom_kills()
    result.seconds = round(time.monotonic() - started, 1)
    return result


def server_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


_COST_CHILD = r"""
import ctypes, json, statistics, sys, time
from pathlib import Path
from clothclf.allocator import release_freed_memory, tune_for_server
from clothclf.app.uploads import classify_uploads
from clothclf.config import Limits
from clothclf.serving.classifier import load_classifier

def status(field):
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) / 1024 for line in lines if line.startswith(field + ":"))

tuned = sys.argv[1] == "tuned" and tune_for_server()
classifier = load_classifier(sys.argv[2])
files = [(Path(p).name, Path(p).read_bytes()) for p in sys.argv[4:]]
seconds, trims = [], []
for _ in range(int(sys.argv[3])):
    started = time.perf_counter()
    classify_uploads(classifier, files, Limits())  # trims once at its end, as in the app
    seconds.append(time.perf_counter() - started)
    started = time.perf_counter()
    release_freed_memory(collect_garbage=False)  # what one more trim costs after a batch
    trims.append(time.perf_counter() - started)
print(json.dumps({"tuned": tuned, "median_s": round(statistics.median(seconds), 2),
                  "trim_ms": round(1000 * statistics.median(trims), 1),
                  "peak_rss_mb": round(status("VmHWM")), "rss_after_mb": round(status("VmRSS"))}))
"""


def allocator_cost(corpus: Sequence[Path], rounds: int = 2) -> list[dict]:
    """What the allocator settings cost: the corpus classified ``rounds`` times in a fresh process
    with glibc's defaults and with :func:`clothclf.allocator.tune_for_server` (median seconds a
    round, one extra ``malloc_trim`` in ms, peak and final RSS)."""
    import subprocess

    rows = []
    for setting in ("default", "tuned"):
        args = [setting, str(PROJECT_ROOT / "models" / "default"), str(rounds), *map(str, corpus)]
        done = subprocess.run(
            [sys.executable, "-c", _COST_CHILD, *args], capture_output=True, text=True, check=True
        )
        rows.append({"setting": setting, **json.loads(done.stdout.strip().splitlines()[-1])})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--visits", type=int, default=20)
    parser.add_argument("--limit-mb", type=int, default=1024)
    parser.add_argument("--after-s", type=float, default=180.0, help="seconds to wait after the last visit")
    parser.add_argument("--session-ttl", type=int, help="server.disconnectedSessionTTL (default: the app's)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "clothclf-soak")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    parser.add_argument("--cost", action="store_true", help="only what the allocator settings cost")
    args = parser.parse_args(argv)
    corpus = hostile_corpus(args.dir / "corpus")
    print(f"corpus: {len(corpus)} files, {sum(p.stat().st_size for p in corpus) / MB:.1f} MB", flush=True)
    if args.cost:
        for row in allocator_cost(corpus):
            print(row, flush=True)
        return 0
    result = soak(
        args.limit_mb,
        corpus,
        args.visits,
        args.after_s,
        args.dir,
        lambda row: print(row, flush=True),
        session_ttl_s=args.session_ttl,
    )
    print(
        f"peak {result.peak_mb} MB of {result.limit_mb} MB, OOM kills {result.oom_kills}, "
        f"server {'alive' if result.alive else 'dead'}, {result.seconds} s",
        flush=True,
    )
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    return 0 if result.oom_kills == 0 and result.alive else 1


if __name__ == "__main__":
    sys.exit(main())
