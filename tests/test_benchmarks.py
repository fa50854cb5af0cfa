"""clothclf.benchmarks: the measurement code behind scripts/ (timings, the serving table, memory probes)."""

from __future__ import annotations

import io
import os
import sys
import time

import numpy as np
import pytest
from helpers import PROJECT_ROOT, make_image
from PIL import Image

from clothclf.benchmarks.memory import AnonymousPeak, MemoryReport, hostile_images, synthetic_photos
from clothclf.benchmarks.report import check, check_min, markdown
from clothclf.benchmarks.serving import TARGETS, cpu_budget, synthetic_jpeg
from clothclf.benchmarks.timing import (
    cpu_seconds,
    images_per_s,
    inotify_watches,
    rss_mb,
    run_script,
    stats,
    timings_ms,
)
from clothclf.serving.classifier import load_classifier

DEFAULT_MODEL = PROJECT_ROOT / "models" / "default"


def test_timed_functions_take_turns_after_their_warm_up():
    calls = []
    times = timings_ms({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=2)
    assert calls == ["a", "a", "b", "b", "a", "b", "a", "b", "a", "b"]
    assert {name: t.shape for name, t in times.items()} == {"a": (3,), "b": (3,)}
    assert all((t >= 0).all() for t in times.values())


def test_stats_and_rates():
    assert stats(np.arange(1.0, 101.0)) == {"p50": 50.5, "p95": pytest.approx(95.05), "min": 1.0}
    rates = images_per_s({"ten": lambda: sum(range(1000))}, images=10)
    assert rates["ten"] > 0
    assert cpu_seconds(lambda: sum(range(100_000))) >= 0


def test_a_fresh_process_reports_its_json_line_and_wall_time():
    result = run_script("import json, sys; print('noise'); print(json.dumps({'args': sys.argv[1:]}))", "x")
    assert result["args"] == ["x"]
    assert result["process_wall_s"] > 0
    with pytest.raises(RuntimeError, match="subprocess failed"):
        run_script("raise SystemExit(3)")


def test_the_synthetic_photo_is_a_jpeg_of_the_datasets_size():
    with Image.open(io.BytesIO(synthetic_jpeg())) as photo:
        assert (photo.format, photo.size) == ("JPEG", (400, 533))


def test_the_table_says_which_targets_are_met():
    latency = {"p50": 7.9, "p95": 10.7, "min": 7.4}
    result = {
        "environment": {
            "model": "m",
            "image": "i",
            "cpus": 2,
            "processor": "cpu",
            "python": "3.11",
            "litert": "2",
            "load_before": 0.6,
        },
        "litert": {
            "latency": latency,
            "decode_resize": latency,
            "forward": {"p50": 3.9, "p95": 6.8, "min": 3.7},
            "latency_1_thread": latency,
            "latency_tta": latency,
            "latency_over_forward": 2.03,
            "num_threads": 2,
            "tta_default": False,
            "images_per_s": {"predict_batch(64)": 206.0},
        },
        "serve": {
            "import_s": 0.19,
            "load_s": 0.07,
            "first_prediction_s": 0.01,
            "cold_start_s": 0.27,
            "process_wall_s": 0.34,
            "peak_rss_mb": 81.0,
            "tensorflow_imported": False,
        },
        "keras": None,
    }
    table = markdown(result)
    assert (
        "| **LiteRT, warm, one JPEG: decode + resize + forward (no TTA)** | 7.9 / 10.7 / 7.4 ms | p50 <= 15 ms: yes |"
        in table
    )
    assert "| LiteRT, latency / raw forward (p50) | 2.03x | <= 2x: **no** |" in table
    assert "must be no: yes" in table and "Keras, warm" not in table
    assert check(TARGETS["peak_rss_mb"], TARGETS["peak_rss_mb"]) == "yes"
    assert check_min(0.84, "batch_x_forward") == ">= 0.85: **no**"


def test_the_cpu_budget_of_the_shipped_model_has_its_parts(tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for i in range(4):
        make_image(i % 3, rng, size=64).save(tmp_path / f"{i}.jpg")
        files.append(str(tmp_path / f"{i}.jpg"))
    budget = cpu_budget(load_classifier(DEFAULT_MODEL, backend="litert", tta=False), DEFAULT_MODEL, files)
    assert set(budget) == {"per_photo_ms", "decode_resize_ms", "forward_1_thread_ms"}
    assert all(value > 0 for value in budget.values())


def test_hostile_images_are_written_once_and_reused(tmp_path):
    slow = {"RGB WebP, 7 MP", "large JPEG", "camera JPEG 6000x4000"}
    images = hostile_images(tmp_path, megapixels=0.01, wide_megapixels=0.01, skip=slow)
    assert "bilevel TIFF" in images and not slow & set(images)
    assert all(path.is_file() for path in images.values())
    written = {kind: path.stat().st_mtime_ns for kind, path in images.items()}
    again = hostile_images(tmp_path, megapixels=0.01, wide_megapixels=0.01, skip=slow)
    assert {kind: path.stat().st_mtime_ns for kind, path in again.items()} == written


def test_synthetic_photos_fill_three_class_folders(tmp_path):
    root = synthetic_photos(tmp_path / "photos", 9)
    assert sorted(p.name for p in root.iterdir()) == ["class0", "class1", "class2"]
    assert sum(1 for _ in root.rglob("*.jpg")) == 9


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_anonymous_peak_of_this_process_is_sampled():
    peak = AnonymousPeak(os.getpid())
    time.sleep(0.2)
    assert peak.stop() > 0
    assert rss_mb(os.getpid()) > 0
    assert inotify_watches(os.getpid()) >= 0


def test_memory_growth_is_counted_from_the_end_of_the_warm_up():
    report = MemoryReport(30, 200, 4, 100.0, 110.0, ((100, 111.5), (200, 110.3)), 0, 60.0)
    assert (report.growth_mb, report.peak_growth_mb) == (0.3, 1.5)
