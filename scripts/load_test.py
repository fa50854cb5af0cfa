"""Load test of the real app: concurrent browser sessions, then the server's memory over many predictions.

    python scripts/load_test.py                          # the shipped model, models/default
    python scripts/load_test.py --model DIR --predictions 500   # any run folder; --sessions sets the browsers
    python scripts/load_test.py --json                   # the figures as one JSON object

It starts ``streamlit run streamlit_app.py`` on a free port of 127.0.0.1 (runs, data and cache
folders in a temporary folder, so nothing of yours is touched) and then:

1. **Concurrent sessions.** One headless Chromium (the system's, ``/usr/bin/chromium`` or
   ``$CHROMIUM``; nothing is downloaded) opens ``--sessions`` separate sessions of the Classify page.
   Once all are loaded they upload a different synthesized photo at the same moment, and each page
   must show the label and confidence the classifier gives that photo when called directly.
2. **Memory.** ``--predictions`` more predictions go through the same server from a few sessions,
   each a new photo, sent the way the browser sends them: the photo is PUT to the server's upload
   endpoint and the page is rerun over its websocket with the file uploader's new state. This is
   the real server doing the real work (upload, script rerun, decode, LiteRT, rendering the
   answer); it just skips drawing the page in a browser, which is what makes hundreds of reruns
   cheap on a small machine. The server's resident memory (``VmRSS`` from ``/proc``, Linux only)
   is read after a warm-up and after every block of predictions. Every answer is checked too.

Everything is bounded in count and time and runs on the loopback interface only. The figures
depend on the machine and on what else runs on it; the test in ``tests/test_load.py`` asserts
only correctness and a generous memory bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from http.cookies import SimpleCookie
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.Common_pb2 import UploadedFileInfo
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import connect

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from clothclf.app.tables import display_name  # noqa: E402
from clothclf.app.uploads import classify_upload  # noqa: E402
from clothclf.benchmarks.memory import MemoryReport  # noqa: E402
from clothclf.benchmarks.server import (  # noqa: E402, F401 (soak.py and the tests import them from here)
    Server,
    free_port,
    server_env,
    streamlit_server,
    streamlit_servers,
)
from clothclf.benchmarks.timing import inotify_watches, rss_mb  # noqa: E402, F401 (tests import both from here)
from clothclf.config import Limits, Paths  # noqa: E402
from clothclf.errors import ClothclfError  # noqa: E402
from clothclf.serving.classifier import load_classifier  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Seconds any one step may take (page load, upload, rerun) on a slow, busy machine.
STEP_TIMEOUT = 240.0
XSRF_COOKIE = "_streamlit_xsrf"


@dataclass(frozen=True)
class Answer:
    """What the Classify page shows for one photo: the label as displayed and the confidence text."""

    label: str
    confidence: str


# --- photos and the answers they should get ------------------------------------------------------


def photo(seed: int, size: int = 64) -> bytes:
    """A PNG of coloured noise whose dominant channel is ``seed % 3`` (red, green, blue in turn)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
    pixels[..., seed % 3] += 150
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def expected_answers(model_dir: Path, photos: Sequence[tuple[str, bytes]]) -> list[Answer]:
    """What the Classify page should show for each photo: the classifier called directly, in this process."""
    classifier, limits = load_classifier(model_dir), Limits()
    results = [classify_upload(classifier, name, data, limits) for name, data in photos]
    return [_shown_answer(r.prediction) for r in results]


def _shown_answer(prediction) -> Answer:
    """The heading and confidence text the page shows (no confidence for a photo it calls unknown)."""
    if prediction.status == "unknown":
        return Answer("Unknown", "")
    return Answer(display_name(prediction.label), f"{prediction.confidence:.0%}")


# --- 1. concurrent browser sessions --------------------------------------------------------------


async def _open(browser, url: str):
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto(url, timeout=STEP_TIMEOUT * 1000)
    await page.locator('input[type="file"]').first.wait_for(state="attached", timeout=STEP_TIMEOUT * 1000)
    return page


async def _upload(page, name: str, data: bytes) -> None:
    await page.locator('input[type="file"]').first.set_input_files(
        files=[{"name": name, "mimeType": "image/png", "buffer": data}], timeout=STEP_TIMEOUT * 1000
    )


async def _answer(page, name: str) -> Answer:
    main = page.locator('[data-testid="stMain"]')
    caption = main.locator('[data-testid="stImageCaption"]', has_text=name)  # under the photo shown
    await caption.wait_for(timeout=STEP_TIMEOUT * 1000)
    await main.locator("h2").first.wait_for(timeout=STEP_TIMEOUT * 1000)
    if await page.locator('[data-testid="stException"]').count():
        raise AssertionError(f"{name}: the page shows an exception")
    label = (await main.locator("h2").first.inner_text()).strip()
    if label == "Unknown":  # a photo called unknown shows no confidence
        return Answer(label, "")
    metric = main.locator('[data-testid="stMetricValue"]').first
    await metric.wait_for(timeout=STEP_TIMEOUT * 1000)
    return Answer(label, (await metric.inner_text()).strip())


async def _browser_round(url: str, photos: Sequence[tuple[str, bytes]]) -> list[Answer]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pages = await asyncio.gather(*(_open(browser, url) for _ in photos))
            await asyncio.gather(*(_upload(page, name, data) for page, (name, data) in zip(pages, photos)))
            return list(
                await asyncio.gather(*(_answer(page, name) for page, (name, _) in zip(pages, photos)))
            )
        finally:
            await browser.close()


def concurrent_browser_sessions(url: str, photos: Sequence[tuple[str, bytes]]) -> list[Answer]:
    """Open one Classify page per photo in one Chromium; once all are loaded, upload every photo at the
    same moment; return what each page shows."""
    return asyncio.run(_browser_round(url, photos))


# --- 2. many predictions through the websocket, and the server's memory -------------------------


class AppSession:
    """One session of the app driven over its websocket as the browser drives it (Classify page).

    :meth:`classify` does what a visitor does who removes the previous photo and drops a new one:
    the file is uploaded to the server, the page reruns with the uploader's new state, and the
    previous file is deleted. Streamlit's own protobuf messages are used, so nothing is mocked.
    """

    def __init__(self, url: str):
        self.url = url
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=30) as response:
            self._xsrf = SimpleCookie(response.headers.get("Set-Cookie", ""))[XSRF_COOKIE].value
        self._resources = contextlib.ExitStack()
        self._socket = self._resources.enter_context(
            connect(
                f"ws://{url.removeprefix('http://')}/_stcore/stream",
                subprotocols=["streamlit", self._xsrf],
                additional_headers={"Cookie": f"{XSRF_COOKIE}={self._xsrf}", "Origin": url},
                max_size=None,
                open_timeout=STEP_TIMEOUT,
            )
        )
        self._previous = None
        messages = self._rerun(page_script_hash="")
        [session] = [m.new_session for m in messages if m.WhichOneof("type") == "new_session"]
        self.session_id, self.page = session.initialize.session_id, session.page_script_hash
        [self._uploader] = [
            e.file_uploader.id for e in _elements(messages) if e.WhichOneof("type") == "file_uploader"
        ]

    def close(self) -> None:
        self._resources.close()

    def __enter__(self) -> AppSession:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def classify(self, name: str, data: bytes) -> Answer:
        """Upload ``data`` as the only photo and return the page's answer."""
        request = BackMsg()
        request.file_urls_request.request_id = uuid.uuid4().hex
        request.file_urls_request.session_id = self.session_id
        request.file_urls_request.file_names.append(name)
        self._socket.send(request.SerializeToString())
        urls = self._receive("file_urls_response").file_urls_response.file_urls[0]
        self._http("PUT", urls.upload_url, _multipart(name, data))
        info = UploadedFileInfo(name=name, size=len(data), file_id=urls.file_id, file_urls=urls)
        elements = _elements(self._rerun(self.page, info))
        if self._previous is not None:
            self._http("DELETE", self._previous.delete_url)
        self._previous = urls
        if any(e.WhichOneof("type") == "exception" for e in elements):
            raise AssertionError(f"{name}: the page raised an exception")
        errors = [
            e.alert.body
            for e in elements
            if e.WhichOneof("type") == "alert" and e.alert.format == Alert.Format.ERROR
        ]
        headings = [
            e.heading.body for e in elements if e.WhichOneof("type") == "heading" and e.heading.tag == "h2"
        ]
        metrics = [e.metric.body for e in elements if e.WhichOneof("type") == "metric"]
        if not headings:
            raise AssertionError(f"{name}: no answer on the page (errors: {errors})")
        return Answer(headings[0], metrics[0] if metrics else "")

    def _rerun(self, page_script_hash: str, upload: UploadedFileInfo | None = None) -> list[ForwardMsg]:
        message = BackMsg()
        message.rerun_script.page_script_hash = page_script_hash
        if upload is not None:
            widget = message.rerun_script.widget_states.widgets.add()
            widget.id = self._uploader
            widget.file_uploader_state_value.uploaded_file_info.append(upload)
        self._socket.send(message.SerializeToString())
        messages = []
        while True:
            received = self._receive()
            messages.append(received)
            if received.WhichOneof("type") == "script_finished":
                return messages

    def _receive(self, wanted: str | None = None) -> ForwardMsg:
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            message = ForwardMsg()
            message.ParseFromString(self._socket.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if wanted is None or message.WhichOneof("type") == wanted:
                return message

    def _http(self, method: str, path: str, body: tuple[bytes, str] | None = None) -> None:
        headers = {"X-Xsrftoken": self._xsrf, "Cookie": f"{XSRF_COOKIE}={self._xsrf}"}
        data = None
        if body is not None:
            data, headers["Content-Type"] = body
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=STEP_TIMEOUT) as response:
            response.read()


def _elements(messages: Sequence) -> list:
    return [
        m.delta.new_element
        for m in messages
        if m.WhichOneof("type") == "delta" and m.delta.WhichOneof("type") == "new_element"
    ]


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def classify_in_parallel(
    clients: Sequence[AppSession], photos: Sequence[tuple[str, bytes]], expected: Sequence[Answer]
) -> int:
    """Share ``photos`` among ``clients`` (one thread each); return how many answers were not ``expected``."""

    def wrong_answers(client: AppSession, indices: range) -> int:
        return sum(client.classify(*photos[i]) != expected[i] for i in indices)

    with ThreadPoolExecutor(len(clients)) as pool:
        shares = [range(k, len(photos), len(clients)) for k in range(len(clients))]
        return sum(pool.map(wrong_answers, clients, shares))


def memory_over_predictions(
    server: Server, model_dir: Path, predictions: int, warmup: int = 50, sessions: int = 4, block: int = 100
) -> MemoryReport:
    """Drive ``warmup`` then ``predictions`` predictions (each a new photo) through ``sessions``
    concurrent app sessions; sample the server's RSS after the warm-up and after every ``block``."""
    total = warmup + predictions
    photos = [(f"photo-{i:04d}.png", photo(10_000 + i)) for i in range(total)]
    expected = expected_answers(model_dir, photos)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(AppSession(server.url)) for _ in range(sessions)]
        rss_start = rss_mb(server.pid)
        wrong = classify_in_parallel(clients, photos[:warmup], expected[:warmup])
        after_warmup = rss_mb(server.pid)
        samples = []
        for first in range(warmup, total, block):
            last = min(first + block, total)
            wrong += classify_in_parallel(clients, photos[first:last], expected[first:last])
            samples.append((last - warmup, rss_mb(server.pid)))
    return MemoryReport(
        warmup,
        predictions,
        sessions,
        rss_start,
        after_warmup,
        tuple(samples),
        wrong,
        round(time.monotonic() - started, 1),
    )


# --- the script ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run both parts against a fresh server; print the figures; exit 1 if any answer was wrong."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Paths.from_env().default_model_dir)
    parser.add_argument("--sessions", type=int, default=20, help="concurrent browser sessions (0: skip)")
    parser.add_argument(
        "--predictions", type=int, default=500, help="predictions for the memory part (0: skip)"
    )
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        load_classifier(args.model)
    except ClothclfError as exc:
        print(f"load_test: {exc}", file=sys.stderr)
        return 2
    figures: dict = {"model": str(args.model)}
    with tempfile.TemporaryDirectory(prefix="clothclf-load-") as workdir:
        with streamlit_server(server_env(args.model, Path(workdir))) as server:
            figures["rss_idle_mb"] = rss_mb(server.pid)
            if args.sessions:
                photos = [(f"session-{i:02d}.png", photo(i)) for i in range(args.sessions)]
                expected = expected_answers(args.model, photos)
                started = time.monotonic()
                shown = concurrent_browser_sessions(server.url, photos)
                figures["concurrent"] = {
                    "sessions": args.sessions,
                    "right_answers": sum(s == e for s, e in zip(shown, expected)),
                    "seconds": round(time.monotonic() - started, 1),
                    "rss_after_mb": rss_mb(server.pid),
                }
            if args.predictions:
                report = memory_over_predictions(server, args.model, args.predictions, args.warmup)
                figures["memory"] = {
                    **asdict(report),
                    "growth_mb": report.growth_mb,
                    "peak_growth_mb": report.peak_growth_mb,
                }
    if args.json:
        print(json.dumps(figures))
    else:
        print_figures(figures)
    concurrent_ok = figures.get("concurrent", {}).get("right_answers", args.sessions) == args.sessions
    return 0 if concurrent_ok and not figures.get("memory", {}).get("wrong_answers") else 1


def print_figures(figures: dict) -> None:
    """The figures of :func:`main` as a few readable lines."""
    print(f"model: {figures['model']}")
    print(f"server RSS when idle: {figures['rss_idle_mb']:.1f} MB")
    if "concurrent" in figures:
        c = figures["concurrent"]
        print(
            f"{c['sessions']} concurrent browser sessions: {c['right_answers']}/{c['sessions']} right answers "
            f"in {c['seconds']:.0f} s; server RSS after: {c['rss_after_mb']:.1f} MB"
        )
    if "memory" in figures:
        m = figures["memory"]
        print(
            f"{m['predictions']} predictions after {m['warmup']} warm-up ones, {m['sessions']} sessions, "
            f"{m['seconds']:.0f} s, {m['wrong_answers']} wrong answers"
        )
        print(
            f"server RSS: {m['rss_start_mb']:.1f} MB at the start, {m['rss_after_warmup_mb']:.1f} MB after the warm-up"
        )
        for count, rss in m["rss_samples_mb"]:
            print(f"  after {count:>4} more: {rss:.1f} MB")
        print(f"growth after the warm-up: {m['growth_mb']:+.1f} MB (peak {m['peak_growth_mb']:+.1f} MB)")


if __name__ == "__main__":
    sys.exit(main())
