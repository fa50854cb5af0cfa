"""Memory measurements: one decode, the app server under a cap, a training run under a cap.

    python scripts/measure_memory.py decode [--megapixels 49] [--json]   # what one image adds
    python scripts/measure_memory.py app --limit-mb 1024                # the server in a 1 GB cgroup
    python scripts/measure_memory.py train --limit-mb 700 --data DIR --head-only --epochs 3
    python scripts/measure_memory.py train-synthetic --photos 20000 --limit-mb 700

``decode``: each kind of image (a 49-megapixel float32 TIFF, a palette GIF with transparency, an RGBA
PNG, a 6000x4000 camera JPEG, ...) is written once into ``--dir``, a few KB to a few MB on disk,
then decoded in a fresh Python process that imports clothclf, reads the file, resets its peak
resident memory (``/proc/self/clear_refs``, Linux), decodes and reports ``VmHWM - VmRSS`` in MB.
Three ways: ``classify`` (``load_image(data, 224)``), ``preview`` (the Classify page's 640-pixel
preview) and ``thumbnail`` (its 240-pixel square). A refused image reports its error instead.

``app``: ``streamlit run`` with the shipped model inside a fresh memory cgroup (root on Linux),
visited by headless Chromium: every image above uploaded one by one, then 20 camera photos at once,
then a normal photo; prints the answers, the server's memory and the group's peak and OOM kills.

``train`` / ``train-synthetic``: ``clothclf train`` (extra arguments are passed on) inside a fresh
memory cgroup with a cold feature cache; prints exit, wall time, peak RSS and OOM kills.
``train-synthetic`` first writes ``--photos`` tiny JPEGs and trains head only at 32 pixels.

The fast test ``tests/test_memory.py`` asserts the issue's bounds on the same measurements. The
measurements live in :mod:`clothclf.benchmarks.memory`; this script keeps the browser-driven ``app`` mode
(it drives the server through ``scripts/load_test.py``) and the cgroups (``tests/memcap.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
sys.path.insert(0, str(PROJECT_ROOT))

from clothclf.benchmarks.memory import (  # noqa: E402
    SYNTHETIC_TRAIN_ARGS,
    camera_batch,
    decode_peaks,
    hostile_images,
    normal_photo,
    synthetic_photos,
    train_under_cap,
)

#: Seconds one upload may take to be answered in the browser on a slow, busy machine.
STEP_TIMEOUT_MS = 240_000


def _upload(page, files: Sequence[Path]) -> None:
    page.locator('input[type="file"]').first.set_input_files(files=[str(f) for f in files])


def _settle(page) -> None:
    page.wait_for_timeout(500)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="hidden", timeout=STEP_TIMEOUT_MS)
    page.wait_for_timeout(500)


def _answer(page) -> str:
    """The label the page shows for one photo, or its error message."""
    main = page.locator('[data-testid="stMain"]')
    label, error = main.locator("h2"), main.locator('[data-testid="stAlertContentError"]')
    for _ in range(2):  # once to see the answer come, once more after the page has settled
        label.or_(error).first.wait_for(timeout=STEP_TIMEOUT_MS)
        _settle(page)
    if error.count():
        return "error: " + error.first.inner_text().strip()
    return label.first.inner_text().strip()


def app_under_cap(
    group, env: dict[str, str], singles: dict[str, Path], batch: Sequence[Path], photo: Path
) -> dict:
    """The real app server started inside the memory cgroup ``group`` (tests/memcap.py), visited by
    headless Chromium (outside it): every image of ``singles`` uploaded one by one, then ``batch`` at
    once, then ``photo``. Returns what the page said at each step, the server's memory after it
    (RSS) and the group's peak and OOM kills."""
    from load_test import CHROMIUM, CHROMIUM_ARGS, rss_mb, streamlit_server
    from playwright.sync_api import sync_playwright

    steps = []
    with streamlit_server(env, preexec_fn=group.enter) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server.url)
        page.wait_for_selector("h1", timeout=STEP_TIMEOUT_MS)
        _settle(page)
        idle = rss_mb(server.pid)
        for kind, path in singles.items():
            _upload(page, [path])
            steps.append({"step": kind, "answer": _answer(page), "rss_mb": rss_mb(server.pid)})
            page.locator('[data-testid="stFileChipDeleteBtn"]').first.click()
            _settle(page)
        _upload(page, batch)
        page.get_by_text("photos classified").wait_for(timeout=STEP_TIMEOUT_MS)
        _settle(page)
        classified = page.get_by_text("photos classified").first.inner_text().strip()
        steps.append({"step": f"batch of {len(batch)}", "answer": classified, "rss_mb": rss_mb(server.pid)})
        page.reload()
        page.wait_for_selector("h1", timeout=STEP_TIMEOUT_MS)
        _settle(page)
        _upload(page, [photo])
        steps.append({"step": "a normal photo", "answer": _answer(page), "rss_mb": rss_mb(server.pid)})
        browser.close()
        alive = server_alive(server.pid)
    return {
        "idle_rss_mb": idle,
        "steps": steps,
        "peak_mb": round(group.peak_mb(), 1),
        "oom_kills": group.oom_kills(),
        "alive": alive,
    }


def server_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def measure_training(limit_mb: int, train_args: Sequence[str], workdir: Path) -> dict:
    """:func:`train_under_cap` with a cold (empty) feature cache and runs folder in ``workdir``."""
    sys.path.insert(0, str(PROJECT_ROOT))
    from tests.memcap import MemoryCgroup

    cache = Path(tempfile.mkdtemp(prefix="cold-cache-", dir=workdir))
    env = {**os.environ, "CLOTHCLF_CACHE_DIR": str(cache), "CLOTHCLF_RUNS_DIR": str(workdir / "runs")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    with MemoryCgroup.create(limit_mb) as group:
        return train_under_cap(group, train_args, env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["decode", "app", "train", "train-synthetic"])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "clothclf-memory")
    parser.add_argument("--megapixels", type=float, default=49.0)
    parser.add_argument("--ways", default="classify,preview,thumbnail")
    parser.add_argument("--limit-mb", type=int, default=1024, help="the memory cap (app, train)")
    parser.add_argument("--photos", type=int, default=20_000, help="photos of the synthetic dataset")
    parser.add_argument("--json", action="store_true")
    args, train_args = parser.parse_known_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.what.startswith("train"):
        if args.what == "train-synthetic":
            data = synthetic_photos(args.dir / f"synthetic-{args.photos}", args.photos)
            train_args = ["--data", str(data), *SYNTHETIC_TRAIN_ARGS, *train_args]
        figures = measure_training(args.limit_mb, train_args, args.dir)
        print(json.dumps(figures, indent=2))
        return figures["returncode"]
    images = hostile_images(args.dir / "hostile", args.megapixels)
    if args.what == "app":
        figures = measure_app(args.limit_mb, images, args.dir)
        print(json.dumps(figures, indent=2))
        return 0 if figures["oom_kills"] == 0 and figures["alive"] else 1
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


def measure_app(limit_mb: int, images: dict[str, Path], workdir: Path) -> dict:
    """:func:`app_under_cap` with the shipped model, in a fresh cgroup of ``limit_mb``."""
    sys.path.insert(0, str(PROJECT_ROOT))
    from load_test import server_env

    from tests.memcap import MemoryCgroup

    with MemoryCgroup.create(limit_mb) as group:
        env = server_env(PROJECT_ROOT / "models" / "default", workdir / "app")
        batch = camera_batch(images, workdir / "batch")
        return app_under_cap(group, env, images, batch, normal_photo(workdir))


if __name__ == "__main__":
    sys.exit(main())
