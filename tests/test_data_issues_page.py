"""The Dataset page: through Streamlit's AppTest, and once in headless Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from helpers import PROJECT_ROOT, dataset_sample, write_dataset, zip_bytes
from streamlit.testing.v1 import AppTest
from test_browser import app_env, app_url, chromium, page  # noqa: F401  (the browser fixtures; sys.path: scripts)

from clothclf.app.training_data import uploads_dir
from clothclf.config import Paths
from clothclf.data.datasets import create_dataset, dataset_fingerprint
from clothclf.data.overlay import overlay_path, read_overlay

APP = PROJECT_ROOT / "streamlit_app.py"
TIMEOUT = 180


def dataset_with_a_leak(root: Path) -> Path:
    """A small dataset with one training photo copied into test and one photo in the wrong class."""
    write_dataset(root, {"train": 10, "validation": 4, "test": 4})
    shutil.copyfile(root / "train/red/red_0.png", root / "test/red/leaked.png")
    (root / "train/green/green_1.png").rename(root / "train/blue/green_1.png")
    return root


@pytest.fixture
def dataset_page(tiny_run, tmp_path, monkeypatch) -> tuple[AppTest, Path]:
    data = dataset_with_a_leak(tmp_path / "data")
    monkeypatch.setenv("CLOTHCLF_DATA_DIR", str(data))
    monkeypatch.setenv("CLOTHCLF_MODEL_DIR", str(tiny_run))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    return at.switch_page("pages/dataset.py").run(), data


def test_the_page_finds_issues_and_writes_decisions_to_the_overlay(dataset_page):
    at, data = dataset_page
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Dataset"]
    at.button(key="ds_find").click().run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Leaks across splits"]) >= 1  # the copied photo (the features may group more)
    assert int(metrics["Label issues"]) >= 0
    excluded = next(b for b in at.button if b.key and b.key.startswith("exclude-"))
    file = excluded.key.removeprefix("exclude-")
    excluded.click().run()
    path = overlay_path(Paths.from_env(), dataset_fingerprint(create_dataset(data)))
    assert [(d.file, d.action) for d in read_overlay(path).decisions] == [(file, "exclude")]
    assert any("Decided: exclude" in c.value for c in at.caption)
    assert (data / file).is_file()  # the photo stays where it was


def balance_bars(at: AppTest) -> dict[str, dict[str, int]]:
    """The class balance chart's bars: split (with its count) -> class -> photos."""
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    return {bar["name"]: dict(zip(bar["x"], bar["y"])) for bar in figure["data"]}


def test_an_uploaded_zip_is_analysed_and_decided_on(tiny_run, tmp_path, monkeypatch):
    folder = dataset_with_a_leak(tmp_path / "mine")
    entries = {f"clothes/{p.relative_to(folder).as_posix()}": p.read_bytes() for p in folder.rglob("*.png")}
    monkeypatch.setenv("CLOTHCLF_DATA_DIR", str(tmp_path / "nowhere"))  # no default dataset: only the upload
    monkeypatch.setenv("CLOTHCLF_MODEL_DIR", str(tiny_run))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run().switch_page("pages/dataset.py").run()
    assert not at.exception and not at.subheader  # nothing to analyse yet: the download is offered
    upload = ("clothes.zip", zip_bytes(entries), "application/zip")
    at.file_uploader(key="ds_upload").set_value(upload).run()
    assert not at.exception and not at.error, [e.value for e in at.exception or at.error]
    assert balance_bars(at) == {
        "train (30)": {"blue": 11, "green": 9, "red": 10},  # one green photo sits in the blue folder
        "validation (12)": {"blue": 4, "green": 4, "red": 4},
        "test (13)": {"blue": 4, "green": 4, "red": 5},  # the leaked copy
    }
    at.button(key="ds_find").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception or at.error]
    metrics = {m.label: int(m.value) for m in at.metric}
    assert metrics["Leaks across splits"] >= 1
    captions = [caption for image in at.get("image") for caption in image.captions]
    assert "test: leaked.png" in captions and "train: red_0.png" in captions  # the leak, side by side
    excluded = next(b for b in at.button if b.key and b.key.startswith("exclude-"))
    file = excluded.key.removeprefix("exclude-")
    excluded.click().run()
    root = next(uploads_dir(Paths.from_env()).glob("*/clothes"))
    path = overlay_path(Paths.from_env(), dataset_fingerprint(create_dataset(root)))
    assert [(d.file, d.action) for d in read_overlay(path).decisions] == [(file, "exclude")]
    assert file.startswith(("train/", "validation/", "test/")) and (root / file).is_file()


@pytest.mark.browser
def test_the_page_in_a_browser_shows_the_map_and_the_duplicates(page, app_url, app_env):  # noqa: F811
    from screenshots import EXCEPTION, TIMEOUT_MS, open_page, settle

    dataset_with_a_leak(Path(app_env["CLOTHCLF_DATA_DIR"]))
    open_page(page, app_url, "dataset")
    page.get_by_role("button", name="Find issues").click()
    page.get_by_text("Map of the photos").wait_for(timeout=TIMEOUT_MS * 3)
    settle(page)
    assert page.locator(EXCEPTION).count() == 0
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 2  # class balance, map
    page.get_by_role("tab", name="Duplicates").click()
    page.get_by_text("Leak across splits").first.wait_for(timeout=TIMEOUT_MS)
    page.screenshot(path=str(Path(app_env["CLOTHCLF_RUNS_DIR"]).parent / "dataset.png"), full_page=True)


#: The server's cap, as on Community Cloud; the server alone stays far below it (it never imports TensorFlow).
LIMIT_MB = 1024
SERVER_PEAK_MB = 300


def memory_mb(pid: int) -> dict[str, float]:
    """A process's resident memory now, its peak and its anonymous part, in MB (``/proc/<pid>/status``)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM", "RssAnon")}


def watch_memory(group, stop: threading.Event, peaks: dict[int, dict[str, float]]) -> None:
    """Every process of ``group``'s peak figures (:func:`memory_mb`), until ``stop``."""
    while not stop.wait(0.25):
        for pid in group.pids():
            with contextlib.suppress(OSError, KeyError, ValueError):
                now = memory_mb(pid)
                peaks[pid] = {k: max(v, peaks.get(pid, {}).get(k, 0.0)) for k, v in now.items()}


@pytest.mark.browser
@pytest.mark.slow
def test_the_page_finds_the_default_datasets_issues_in_a_1_gb_server(shared_dataset, chromium, tmp_path):  # noqa: F811
    """The shipped model with a cold feature cache, on 20 photos a class of each split of
    clothing-dataset-small (600 photos: the child's memory is the backbone's, the features add 5 KB a
    photo); ``CLOTHCLF_PAGE_TEST_PHOTOS=all`` takes the whole dataset, the figures docs/data-quality.md
    reports (``-s`` prints them)."""
    from load_test import streamlit_server
    from memcap import MemoryCgroup
    from screenshots import EXCEPTION, open_page

    per_class = os.environ.get("CLOTHCLF_PAGE_TEST_PHOTOS", "20")
    data = (
        shared_dataset
        if per_class == "all"
        else dataset_sample(shared_dataset, tmp_path / "data", int(per_class))
    )
    env = {**os.environ, "CLOTHCLF_DATA_DIR": str(data), "CLOTHCLF_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("CLOTHCLF_MODEL_DIR", None)  # the shipped model
    peaks: dict[int, dict[str, float]] = {}
    with MemoryCgroup.create(LIMIT_MB) as group, streamlit_server(env, 300, group.enter) as server:
        stop = threading.Event()
        threading.Thread(target=watch_memory, args=(group, stop, peaks), daemon=True).start()
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        open_page(page, server.url, "dataset")
        started = time.monotonic()
        page.get_by_role("button", name="Find issues").click()
        page.get_by_text("Map of the photos").wait_for(timeout=1_800_000)
        page.locator('[data-testid="stMetric"]').filter(has_text="Label issues").wait_for()
        seconds = time.monotonic() - started
        shown = page.locator('[data-testid="stMetric"]').all_inner_texts()
        stop.set()
        server_now = memory_mb(server.pid)
        figures = dict(
            seconds=round(seconds),
            server_peak_rss_mb=round(server_now["VmHWM"]),
            server_rss_after_mb=round(server_now["VmRSS"]),
            child_peak_rss_mb=round(max(p["VmHWM"] for pid, p in peaks.items() if pid != server.pid)),
            child_peak_anon_mb=round(max(p["RssAnon"] for pid, p in peaks.items() if pid != server.pid)),
            cgroup_peak_mb=round(group.peak_mb()),
            oom_kills=group.oom_kills(),
            shown=[" ".join(text.split()) for text in shown],
        )
        print(json.dumps(figures))
        assert page.locator(EXCEPTION).count() == 0, figures
    # The cgroup's own peak counts the page cache, which fills any cap; what must fit is the memory in use.
    assert figures["oom_kills"] == 0, figures
    assert figures["server_peak_rss_mb"] + figures["child_peak_anon_mb"] < LIMIT_MB, figures
    assert figures["server_peak_rss_mb"] < SERVER_PEAK_MB, figures
    assert any(text.startswith("Label issues") for text in figures["shown"]), figures
