"""The documentation's screenshots, taken from the real app in headless Chromium (Playwright).

    python scripts/screenshots.py [OUT_DIR]        # default docs/screenshots

Starts ``streamlit run streamlit_app.py`` with the environment's model and dataset (by default the
shipped model and the downloaded dataset), drives each page as a visitor would and writes one PNG a
view. It fails on a page that shows an exception, and on a screenshot that README.md or docs/ show
but this script does not write, so a changed page means a rerun, never a stale picture. Chromium is
the system's (``/usr/bin/chromium``, or ``CHROMIUM``); nothing is downloaded. ``tests/test_browser.py``
runs it against the tiny test model.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import CHROMIUM, CHROMIUM_ARGS, PROJECT_ROOT, streamlit_server  # noqa: E402

TIMEOUT_MS = 90_000
DESKTOP = {"width": 1400, "height": 1000}
#: A common phone's viewport in CSS pixels.
PHONE = {"width": 390, "height": 844}
EXCEPTION = '[data-testid="stException"]'
#: Every screenshot this script writes, by file name.
SHOTS = ("classify.png", "classify-phone.png", "mistakes.png", "models.png", "fine_tune.png")


def settle(page) -> None:
    """Wait until the script run triggered by the last action has finished rendering."""
    page.wait_for_timeout(500)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="hidden", timeout=TIMEOUT_MS)
    page.wait_for_timeout(700)


def open_page(page, url: str, path: str) -> None:
    """Open the app page at ``path`` and wait for it to finish rendering."""
    page.goto(f"{url}/{path}", timeout=TIMEOUT_MS)
    page.wait_for_selector("h1", timeout=TIMEOUT_MS)
    settle(page)


def screenshot(page, path: Path, width: int = DESKTOP["width"]) -> None:
    """The whole main area (the window made as tall as the content first); refused if it shows an exception."""
    if page.locator(EXCEPTION).count():
        raise RuntimeError(
            f"{page.url} shows an exception: {page.locator(EXCEPTION).first.inner_text()[:500]}"
        )
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": width, "height": min(max(height, 800), 4000)})
    page.wait_for_timeout(1000)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))


def show_an_answer(page, photo: bytes | None) -> None:
    """On Classify: try an example photo, or upload ``photo`` when there is none (no dataset)."""
    examples = page.get_by_role("button", name="Try this")
    if photo is None:  # the examples come with the page's first run: wait for them
        examples.first.wait_for(timeout=TIMEOUT_MS)
    if examples.count():
        examples.nth(min(1, examples.count() - 1)).click()
    elif photo is not None:
        page.locator('input[type="file"]').first.set_input_files(
            files=[{"name": "photo.png", "mimeType": "image/png", "buffer": photo}]
        )
    else:
        raise RuntimeError("no example photo to try (is the dataset downloaded?) and no photo given")
    page.get_by_text(re.compile("This looks like|Unknown")).first.wait_for(timeout=TIMEOUT_MS)
    settle(page)


def write_screenshots(url: str, out_dir: Path, browser, photo: bytes | None = None) -> list[Path]:
    """Every view of :data:`SHOTS` of the app at ``url``, written to ``out_dir``; their paths."""
    page = browser.new_page(viewport=DESKTOP)
    open_page(page, url, "")
    show_an_answer(page, photo)
    screenshot(page, out_dir / "classify.png")
    phone = browser.new_page(viewport=PHONE, is_mobile=True, device_scale_factor=2)
    open_page(phone, url, "")
    show_an_answer(phone, photo)
    preview = phone.locator('[data-testid="stImage"]').last  # the photo beside its answer
    preview.evaluate("element => element.scrollIntoView({block: 'start'})")
    phone.wait_for_timeout(1000)  # one phone screen from the photo down: the answer must be on it
    phone.screenshot(path=str(out_dir / "classify-phone.png"))
    for name, path in (
        ("mistakes.png", "mistakes"),
        ("models.png", "models"),
        ("fine_tune.png", "fine_tune"),
    ):
        page.set_viewport_size(DESKTOP)
        open_page(page, url, path)
        screenshot(page, out_dir / name)
    return [out_dir / name for name in SHOTS]


def shown_in_docs(root: Path = PROJECT_ROOT) -> set[str]:
    """The screenshot file names README.md and docs/*.md show."""
    texts = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    found = (re.findall(r"screenshots/([\w.-]+\.png)", p.read_text()) for p in texts if p.is_file())
    return {name for names in found for name in names}


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    out_dir = Path(argv[0]) if argv else PROJECT_ROOT / "docs" / "screenshots"
    unwritten = shown_in_docs() - set(SHOTS)
    if unwritten:
        print(f"the docs show screenshots this script does not write: {', '.join(sorted(unwritten))}")
        return 1
    with streamlit_server(dict(os.environ)) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            written = write_screenshots(server.url, out_dir, browser)
        finally:
            browser.close()
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
