"""The real app in headless Chromium: ``streamlit run`` as a subprocess, driven with Playwright.

As a test (``pytest -m browser tests/test_browser.py``) it uses the tiny fixture model. The docs'
screenshots come from ``scripts/screenshots.py``, which drives the app the same way (and is run here).

Chromium comes from the system (``/usr/bin/chromium``, or ``CHROMIUM`` in the environment); nothing
is downloaded.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import PROJECT_ROOT
from PIL import Image

from clothclf.app.jobs import Job

sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
from load_test import (  # noqa: E402  (shared with the load test)
    CHROMIUM,
    CHROMIUM_ARGS,
    inotify_watches,
    server_env,
    streamlit_server,
)
from screenshots import (  # noqa: E402  (the docs' screenshots drive the app as these tests do)
    EXCEPTION,
    TIMEOUT_MS,
    open_page,
    settle,
    shown_in_docs,
    write_screenshots,
)

PAGES = {"": "Classify clothing photos", "report": "Model report", "mistakes": "Mistakes", "models": "Models"}
#: Every page but the default one, by URL path, and its title; the navigation's entries in order.
DEEP_LINKS = {
    "report": "Model report",
    "mistakes": "Mistakes",
    "models": "Models",
    "fine_tune": "Fine-tune",
    "dataset": "Dataset",
}
#: How long a fresh server's first page may take.
FIRST_RUN_MS = 300_000
NAVIGATION = ["Classify", "Model report", "Mistakes", "Models", "Fine-tune", "Dataset"]


def photo_png() -> bytes:
    """A synthesized photo-like image (a noisy dark blob on a light background)."""
    rng = np.random.default_rng(0)
    pixels = np.full((300, 240, 3), 235, np.uint8)
    pixels[60:260, 50:190] = rng.integers(20, 90, (200, 140, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(page, name: str, data: bytes) -> None:
    page.locator('input[type="file"]').first.set_input_files(
        files=[{"name": name, "mimeType": "image/png", "buffer": data}]
    )
    page.get_by_text("This looks like").wait_for(timeout=TIMEOUT_MS)
    settle(page)


@pytest.fixture(scope="module")
def app_env(tiny_run, tmp_path_factory) -> dict[str, str]:
    """The environment of the app server: the tiny model (evaluated on test too), empty folders."""
    from test_app import add_test_split

    model = add_test_split(Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("browser") / "tiny")))
    summary = json.loads((model / "run.json").read_text())  # every answer to review: a status to see
    summary["trust"].update(unknown_threshold=1e9, review_confidence=1.01)
    (model / "run.json").write_text(json.dumps(summary))
    base = tmp_path_factory.mktemp("browser-env")
    return {
        **os.environ,
        "CLOTHCLF_MODEL_DIR": str(model),
        "CLOTHCLF_RUNS_DIR": str(base / "runs"),
        "CLOTHCLF_DATA_DIR": str(base / "data"),
        "CLOTHCLF_CACHE_DIR": str(base / "cache"),
    }


@pytest.fixture(scope="module")
def app_url(app_env) -> Iterator[str]:
    with streamlit_server(app_env) as server:
        yield server.url


@pytest.fixture
def chromium():
    """Headless Chromium (the system's); skipped where there is none."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(app_url, chromium):
    return chromium.new_page(viewport={"width": 1400, "height": 1000})


@pytest.mark.browser
def test_upload_a_photo_and_see_the_label_and_confidence(page, app_url, tiny_run):
    open_page(page, app_url, "")
    upload(page, "photo.png", photo_png())
    main = page.locator('[data-testid="stMain"]')
    label = main.locator("h2").first.inner_text().strip().lower()
    assert label in (tiny_run / "class_names.json").read_text()
    assert re.fullmatch(r"\d{1,3}%", page.locator('[data-testid="stMetricValue"]').first.inner_text().strip())
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 1
    assert page.get_by_text("Please check").is_visible()
    assert page.locator(EXCEPTION).count() == 0


@pytest.mark.browser
def test_every_page_opens_without_an_exception(page, app_url):
    for path, title in PAGES.items():
        open_page(page, app_url, path)
        assert page.locator("h1").first.inner_text().strip() == title
        assert page.locator(EXCEPTION).count() == 0, path
    open_page(page, app_url, "fine_tune")
    assert page.locator(EXCEPTION).count() == 0


@pytest.mark.browser
def test_the_models_table_fits_a_laptop_window_without_scrolling_sideways(page, app_url):
    open_page(page, app_url, "models")  # the page fixture's window is 1400 px wide
    table = page.locator('[data-testid="stDataFrame"] .dvn-scroller').first
    scrolled, shown = table.evaluate("element => [element.scrollWidth, element.clientWidth]")
    assert 0 < scrolled <= shown
    assert page.locator(EXCEPTION).count() == 0


@pytest.mark.browser
def test_clicking_a_confusion_matrix_cell_selects_it(page, app_url, tiny_run):
    first_class = json.loads((tiny_run / "class_names.json").read_text())[0]
    open_page(page, app_url, "report")
    page.get_by_role("tab", name="Confusion matrix").click()
    settle(page)
    drag_areas = page.locator(".nsewdrag")
    grid = next(box for box in (drag_areas.nth(i).bounding_box() for i in range(drag_areas.count())) if box)
    page.mouse.click(grid["x"] + grid["width"] * 0.1, grid["y"] + grid["height"] * 0.1)  # top-left cell
    settle(page)
    chosen = [
        page.get_by_role("combobox", name=name).input_value() for name in ("True class", "Predicted class")
    ]
    assert [c.lower() for c in chosen] == [first_class, first_class]
    assert page.locator(EXCEPTION).count() == 0


@pytest.mark.browser
def test_a_deep_link_as_the_first_request_to_a_fresh_server_opens_the_app_page(chromium, tmp_path):
    # One fresh server per link, with the app's own configuration, asked for its page before anything
    # else. One server at a time: four starting together on a loaded machine outran any fixed wait.
    env = server_env(PROJECT_ROOT / "models" / "default", tmp_path)
    for path, title in DEEP_LINKS.items():
        with streamlit_server(env, file_watcher=None) as server:  # returns once /_stcore/health answers
            page = chromium.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server.url}/{path}")
            # The app's own sidebar, after the server's first script run (imports and the model's first
            # load: about 20 s on an idle machine, minutes on a loaded one).
            page.get_by_text("Model in use").wait_for(timeout=FIRST_RUN_MS)
            settle(page)
            assert page.locator("h1").first.inner_text().strip() == title, path
            links = page.locator('[data-testid="stSidebarNav"] [data-testid="stSidebarNavLink"]')
            assert [
                links.nth(i).inner_text().split("\n")[-1].strip() for i in range(links.count())
            ] == NAVIGATION
            assert page.locator(EXCEPTION).count() == 0, path
            # The app's file watcher polls its own files: no inotify watch over the project tree (with
            # a .venv inside the project, one per folder of every installed package).
            assert inotify_watches(server.pid) == 0
            page.close()


@pytest.mark.browser
def test_a_run_started_elsewhere_can_be_cancelled_after_a_reload(
    page, app_url, app_env, synthetic_dataset, session_cache
):
    # A process that starts a long run and exits, as a server killed mid-run would: the training
    # child lives on, and this server (which never started it) must show it and let anyone cancel it.
    starter = (
        "import dataclasses, sys\n"
        "from helpers import long_config\n"
        "from clothclf.app.jobs import start_job\n"
        "from clothclf.config import Paths\n"
        "paths = dataclasses.replace(Paths.from_env(), cache_dir=__import__('pathlib').Path(sys.argv[2]))\n"
        "print(start_job(long_config(__import__('pathlib').Path(sys.argv[1])), paths).folder)\n"
    )
    env = {**app_env, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "tests")])}
    started = subprocess.run(
        [sys.executable, "-c", starter, str(synthetic_dataset), str(session_cache)],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    job = Job(Path(started.stdout.strip()))
    try:
        open_page(page, app_url, "fine_tune")
        page.get_by_text("Training in progress").wait_for(timeout=TIMEOUT_MS)
        page.reload()
        page.get_by_role("button", name="Cancel training").click(timeout=TIMEOUT_MS)
        page.get_by_text("The run was cancelled").wait_for(timeout=3 * TIMEOUT_MS)
        assert job.status().state == "cancelled"
        assert page.locator(EXCEPTION).count() == 0
    finally:
        job.cancel()
        job.wait(300)


@pytest.mark.browser
def test_the_screenshot_script_drives_every_view_the_docs_show(app_url, chromium, tmp_path):
    written = write_screenshots(app_url, tmp_path, chromium, photo=photo_png())
    assert shown_in_docs() <= {path.name for path in written}
    for path in written:
        assert path.read_bytes().startswith(b"\x89PNG"), path


@pytest.mark.browser
def test_a_phone_sees_the_answer_without_scrolling_past_the_photo(app_url, chromium):
    phone = chromium.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    open_page(phone, app_url, "")
    phone.locator('input[type="file"]').first.set_input_files(
        files=[{"name": "tall.png", "mimeType": "image/png", "buffer": tall_photo_png()}]
    )
    answer = phone.get_by_text("This looks like")
    answer.wait_for(timeout=TIMEOUT_MS)
    settle(phone)
    photo = phone.locator('[data-testid="stImage"] img').first.bounding_box()
    assert photo["height"] <= 420, photo  # a full-height portrait photo would be ~520 px tall here
    assert phone.locator(EXCEPTION).count() == 0


def tall_photo_png() -> bytes:
    """A portrait photo (3:4), as phones take them."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((1200, 900, 3), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
