"""Load on the real server: concurrent browser sessions, and the server's memory over many predictions.

``streamlit run streamlit_app.py`` runs as a subprocess on a free port of 127.0.0.1, driven by
``scripts/load_test.py`` (which also prints these figures for any model). The model is the colour
CNN of ``test_reliability_inputs.py``: its answers differ from photo to photo, so a session shown
another session's answer would be caught. Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_reliability_inputs import colour_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import load_test  # noqa: E402

SESSIONS = 10
PREDICTIONS = 200
WARMUP = 30
#: Generous: RSS moves by a few MB with allocator noise (0.3 MB measured); a per-rerun leak of 100 KB would
#: exceed it.
#: (``scripts/load_test.py`` runs 20 sessions and 500 predictions by default.)
MAX_GROWTH_MB = 20.0

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def model(tmp_path_factory, synthetic_dataset) -> Path:
    return colour_model(tmp_path_factory.getbasetemp(), synthetic_dataset)


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    env = load_test.server_env(model, tmp_path_factory.mktemp("load"))
    with load_test.streamlit_server(env) as server:
        yield server


def test_concurrent_sessions_each_get_their_own_right_answer(server, model):
    pytest.importorskip("playwright.async_api")
    if not Path(load_test.CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {load_test.CHROMIUM}")
    photos = [(f"session-{i:02d}.png", load_test.photo(i)) for i in range(SESSIONS)]
    expected = load_test.expected_answers(model, photos)
    assert len(set(expected)) >= 2, "the photos should not all get one answer (status, label, confidence)"
    shown = load_test.concurrent_browser_sessions(server.url, photos)
    print(
        f"\n{SESSIONS} concurrent sessions: {sum(s == e for s, e in zip(shown, expected))} right answers; "
        f"server RSS {load_test.rss_mb(server.pid):.1f} MB"
    )
    assert shown == expected


def test_server_memory_stays_flat_over_many_predictions(server, model):
    report = load_test.memory_over_predictions(server, model, PREDICTIONS, WARMUP)
    samples = ", ".join(f"{count}: {rss:.1f}" for count, rss in report.rss_samples_mb)
    print(
        f"\nserver RSS {report.rss_start_mb:.1f} MB at the start, {report.rss_after_warmup_mb:.1f} MB after "
        f"{WARMUP} warm-up predictions; after more predictions (count: MB) {samples}; growth "
        f"{report.growth_mb:+.1f} MB, peak {report.peak_growth_mb:+.1f} MB; {report.seconds:.0f} s"
    )
    assert report.wrong_answers == 0
    assert len(report.rss_samples_mb) == PREDICTIONS // 100
    assert report.peak_growth_mb < MAX_GROWTH_MB
