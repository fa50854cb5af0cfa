"""Soak: the real app in a 1 GB memory cgroup, visited again and again by Chromium uploading hostile
images, keeps its memory flat and gives it back once the visitors' sessions have ended.

The issue's run (20 visits of the whole corpus, the app's own session TTL, 3 minutes after) takes
about 9 minutes on a quiet machine: ``python scripts/soak.py`` (figures in docs/memory.md, Soak).
This test runs a smaller corpus four times with a 5-second session TTL so that it fits in CI; before
the fixes the same visits grew about 100 MB each (the uploads twice, never freed) and never came back.
"""

from __future__ import annotations

import copy
import io
import platform
import sys
from pathlib import Path

import pytest
from helpers import PROJECT_ROOT, noisy_png

from clothclf.allocator import release_freed_memory, tune_for_server
from clothclf.data.images import load_image

sys.path.insert(0, str(PROJECT_ROOT / "scripts"))

#: Slow-to-make or slow-to-encode images left out of the CI corpus (the script's run has them).
CI_SKIP = (
    "large JPEG",
    "camera JPEG 6000x4000",
    "RGBA WebP, 28 MP",
    "float32 TIFF, one strip, 28 MP",
    "int32 TIFF",
)
VISITS = 4
LIMIT_MB = 1024
#: Seconds for a session to end (the 5 s TTL) and be swept (every 5 s), with room for a busy machine.
SESSION_END_S = 20
#: The issue's bounds: peak at most 650 MB in the 1 GB cap, back within 100 MB of idle afterwards.
PEAK_MB = 650
BACK_TO_IDLE_MB = 100


@pytest.mark.browser
@pytest.mark.slow
def test_memory_stays_flat_over_visits_with_hostile_uploads_and_comes_back(tmp_path_factory):
    pytest.importorskip("playwright.sync_api")
    from load_test import CHROMIUM
    from soak import hostile_corpus, soak

    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    workdir = tmp_path_factory.mktemp("soak")
    corpus = hostile_corpus(workdir / "corpus", skip=CI_SKIP)
    result = soak(
        LIMIT_MB, corpus, VISITS, SESSION_END_S, workdir, idle_wait_s=SESSION_END_S, session_ttl_s=5
    )
    figures = f"idle {result.idle}, visits {result.visits}, after {result.after}, peak {result.peak_mb}"
    print(figures)  # pytest -rP shows them
    assert result.oom_kills == 0 and result.alive, figures
    answers = {row["answer"] for row in result.visits}
    assert len(answers) == 1 and next(iter(answers)).endswith("photos classified"), figures
    assert result.peak_mb <= PEAK_MB, figures
    # Flat: the last visit ends no more than two visits' uploads (sessions whose reconnect time is over
    # but not yet swept) and 30 MB above the first; before the fixes each visit added about 100 MB
    # (its uploads twice, never freed, and the decoders' freed memory kept by glibc), so four visits
    # ended 300 MB up.
    usage = [row["usage_mb"] for row in result.visits]
    assert usage[-1] <= usage[0] + 2 * result.corpus_mb + 30, figures
    assert result.after[-1]["usage_mb"] <= result.idle["usage_mb"] + BACK_TO_IDLE_MB, figures


def anonymous_mb() -> float:
    """This process's anonymous resident memory (``RssAnon``) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    pytest.skip("needs Linux /proc")


def test_an_upload_is_decoded_in_place_not_copied():
    """Streamlit's uploaded files are ``BytesIO`` objects made from the received bytes: asking one
    for its buffer (``getbuffer``) copies them, which held every upload twice for its session."""
    received = noisy_png() + bytes(64 << 20)  # 64 MB after the PNG's end, which Pillow ignores
    upload = io.BytesIO(received)  # shares the bytes, as long as the server keeps them too
    before = anonymous_mb()
    assert load_image(upload, 16).shape == (16, 16, 3)
    assert anonymous_mb() - before < 16, "the upload's bytes were copied"  # the copy would stay: 64 MB


def test_the_copy_of_an_upload_streamlit_hands_the_script_shares_its_bytes():
    """Streamlit deep-copies every widget's value for each script run; a deep copy of an uploaded file
    (an ``io.BytesIO``) copied its bytes, so every upload was held twice while its session lasted."""
    from streamlit.proto.Common_pb2 import FileURLs
    from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec

    from pages._shared import keep_server_memory_flat

    keep_server_memory_flat()  # what the app's entry point runs first
    received = bytes(64 << 20)
    upload = UploadedFile(UploadedFileRec("id", "photo.png", "image/png", received), FileURLs())
    before = anonymous_mb()
    [copied] = copy.deepcopy([upload])
    assert anonymous_mb() - before < 16, "the upload's bytes were copied"
    assert (copied.file_id, copied.name, copied.size, copied.read()) == (
        "id",
        "photo.png",
        64 << 20,
        received,
    )
    copied.write(b"more")  # the script's copy is still its own
    assert upload.getvalue() is received


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_the_allocator_takes_the_server_settings_and_trims():
    assert tune_for_server()  # mallopt accepted every setting
    release_freed_memory()
