"""Bounded memory: what one decode adds (measured in a subprocess), the container's limit (cgroup v1
and v2) and the warning before a run that will not fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import dataset_sample

from clothclf.app.memory import memory_limit_mb, memory_warning, training_memory_mb
from clothclf.config import TrainConfig
from clothclf.runs import CONFIG, load_run
from clothclf.serving.classifier import load_classifier
from tests.memcap import MemoryCgroup

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from measure_memory import (  # noqa: E402
    app_under_cap,
    camera_batch,
    decode_peaks,
    hostile_images,
    normal_photo,
    synthetic_photos,
    train_under_cap,
)

#: The issue's bound on what any one image within the limits may add while it is decoded.
DECODE_BOUND_MB = 150


#: 49 MP images of 4 bytes a pixel are refused from their header (tests/test_images.py); not made here.
REFUSED_FROM_THE_HEADER = ("float32 TIFF", "int32 TIFF", "RGBA PNG", "LA PNG", "RGB PNG")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    return hostile_images(tmp_path_factory.mktemp("hostile"), skip=REFUSED_FROM_THE_HEADER)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to measure peaks")
def test_each_hostile_image_adds_at_most_150_mb_while_decoded(hostile):
    """49-megapixel images of every kind (a few KB on disk) and 6000x4000 camera JPEGs, decoded for
    classifying and for the Classify page's preview, each in a fresh state of one subprocess."""
    jobs = [(kind, path, how) for kind, path in hostile.items() for how in ("classify", "preview")]
    peaks = decode_peaks([(path, how) for _, path, how in jobs])
    figures = {f"{kind}, {how}": peak["added_mb"] for (kind, _, how), peak in zip(jobs, peaks)}
    refused = set()
    for (kind, _, how), peak in zip(jobs, peaks):
        assert peak["added_mb"] <= DECODE_BOUND_MB, (kind, how, figures)
        if peak["error"] is None:
            assert peak["shape"][-1] == 3
        else:
            assert "MB to decode, over the limit of 120 MB per image" in peak["error"], (kind, peak)
            refused.add(kind)
    # Refused for the memory a full decode would need: one 214 MB TIFF strip, WebP's four copies.
    # Grey, palette, bilevel, 16-bit and JPEG images of 49 MP and 28 MP colour images decode.
    assert refused == {"float32 TIFF, one strip, 28 MP", "RGBA WebP, 28 MP"}


def _fake_cgroup(tmp_path: Path, lines: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(lines)
    return root, proc


def test_memory_limit_of_cgroup_v2_and_v1_and_none(tmp_path):
    v2 = _fake_cgroup(
        tmp_path / "v2", "0::/app/web\n", {"app/web/memory.max": "max\n", "app/memory.max": "1073741824\n"}
    )
    assert memory_limit_mb(*v2) == 1024
    v1 = _fake_cgroup(
        tmp_path / "v1",
        "5:cpu:/\n4:memory:/docker/abc\n0::/\n",
        {
            "memory/docker/abc/memory.limit_in_bytes": "734003200\n",
            "memory/memory.limit_in_bytes": "9223372036854771712\n",
        },
    )
    assert memory_limit_mb(*v1) == 700
    unlimited = _fake_cgroup(tmp_path / "none", "0::/\n", {"memory.max": "max\n"})
    assert memory_limit_mb(*unlimited) is None
    assert memory_limit_mb(tmp_path, tmp_path / "missing") is None


def test_a_process_in_a_capped_cgroup_reads_its_own_limit():
    with MemoryCgroup.create(300) as group:
        code = "from clothclf.app.memory import memory_limit_mb; print(memory_limit_mb())"
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=group.enter
        )
        assert done.stdout.strip() == "300.0", done.stderr
        assert group.oom_kills() == 0


def test_warning_before_a_run_that_will_not_fit(tmp_path):
    head_only = TrainConfig(str(tmp_path), head_only=True)
    fine_tune = TrainConfig(str(tmp_path), batch_size=32)
    assert training_memory_mb(fine_tune) > training_memory_mb(head_only)
    assert training_memory_mb(TrainConfig(str(tmp_path), batch_size=8)) < training_memory_mb(fine_tune)
    assert memory_warning(head_only, None) is None
    assert memory_warning(head_only, 2700, used_mb=200) is None
    warning = memory_warning(fine_tune, 1024, used_mb=250)
    assert "774 MB of the 1,024 MB" in warning and "head only" in warning and "smaller batch" in warning
    # Nothing a visitor can set makes a head-only run smaller: the advice says the server is too small.
    too_small = memory_warning(head_only, 690, used_mb=340)
    assert "350 MB of the 690 MB" in too_small and "too small to train" in too_small
    assert "smaller batch" not in too_small and "Try training the head only" not in too_small


def test_a_training_child_killed_by_sigkill_most_likely_ran_out_of_memory():
    from clothclf.app.jobs import out_of_memory_hint

    assert out_of_memory_hint(1024, head_only=False) == (
        ". It most likely ran out of memory of the 1,024 MB this app may use. "
        "Try training the head only, smaller images or a smaller batch."
    )
    assert "ran out of memory. Try" in out_of_memory_hint(None, head_only=False)
    assert "already the lightest run" in out_of_memory_hint(690, head_only=True)


# --- under a real cap: the app server and training runs in a memory cgroup -----------------------


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return {
        **os.environ,
        "CLOTHCLF_RUNS_DIR": str(tmp_path / "runs"),
        "CLOTHCLF_DATA_DIR": str(tmp_path / "data"),
        "CLOTHCLF_CACHE_DIR": str(tmp_path / "cold-cache"),
        "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
        **extra,
    }


@pytest.mark.browser
@pytest.mark.slow
def test_app_server_in_a_1gb_cap_survives_every_hostile_upload_and_a_camera_batch(hostile, tmp_path):
    """The real server (shipped model) started inside a 1 GB cgroup; Chromium (outside it) uploads each
    hostile image one by one, then 20 camera photos (6000x4000) at once, then a normal photo."""
    pytest.importorskip("playwright.sync_api")
    from load_test import CHROMIUM

    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with MemoryCgroup.create(1024) as group:
        figures = app_under_cap(
            group, _env(tmp_path), hostile, camera_batch(hostile, tmp_path / "batch"), normal_photo(tmp_path)
        )
    assert figures["oom_kills"] == 0 and figures["alive"], figures
    answers = {step["step"]: step["answer"] for step in figures["steps"]}
    for kind in hostile:
        assert kind in answers, figures
    assert answers["batch of 20"] == "20 photos classified", figures
    assert not answers["a normal photo"].startswith("error"), figures


@pytest.mark.slow
def test_cold_head_only_run_on_the_default_dataset_completes_in_a_700_mb_cap(shared_dataset, tmp_path):
    """``clothclf train --head-only --epochs 10`` with an empty feature cache (today's first run on a
    fresh deploy: the shipped backbone, its ImageNet weights, its conversion) under a 700 MB cap learns
    the classes; the temperature it fitted on validation is the one serving applies (the classifier
    reproduces the saved calibrated probabilities). On 40 photos a class of each split of the default
    dataset: what grows with the photos (5 KB of features each) is the 20,000-photo test's."""
    data = dataset_sample(shared_dataset, tmp_path / "sample", 40)
    with MemoryCgroup.create(700) as group:
        args = ["--data", str(data), "--head-only", "--epochs", "10"]
        figures = train_under_cap(group, args, _env(tmp_path))
    assert figures["returncode"] == 0 and figures["oom_kills"] == 0, figures
    assert figures["result"]["val_accuracy"] > 0.7, figures
    run = load_run(Path(figures["result"]["run_dir"]))
    assert run.summary["temperature"] != 1.0
    rows = run.predictions("validation")[:20]
    served = load_classifier(run.path).predict_batch([data / row["file"] for row in rows])
    assert [p.label for p in served] == [row["predicted"] for row in rows]
    np.testing.assert_allclose(
        [p.confidence for p in served], [float(r["confidence"]) for r in rows], atol=1e-4
    )


@pytest.mark.slow
def test_head_only_run_on_20000_photos_completes_in_a_700_mb_cap(tmp_path):
    """A head-only run's memory does not grow with the dataset beyond its features (5 KB a photo,
    whatever the image size): 20,000 tiny JPEGs, features at 32 px (1,280 floats each, as at 224 px),
    cold cache, one epoch (memory does not grow per epoch), under a 700 MB cap."""
    data = synthetic_photos(tmp_path / "photos", 20_000)
    with MemoryCgroup.create(700) as group:
        args = [
            "--data",
            str(data),
            "--head-only",
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--weights",
            "none",
        ]
        figures = train_under_cap(group, args, _env(tmp_path), timeout=600)
    assert figures["returncode"] == 0 and figures["oom_kills"] == 0, figures
    config = json.loads((Path(figures["result"]["run_dir"]) / CONFIG).read_text())
    sizes = config["dataset"]["sizes"]
    assert sum(sizes.values()) == 20_000, sizes
