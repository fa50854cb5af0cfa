"""What a new user meets in the first hour: offline weights, download progress, plurals, messages."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import subprocess
import sys
import threading
import urllib.error
from pathlib import Path

import pytest
from helpers import tiny_config

import clothclf
from clothclf.app.download import download_progress
from clothclf.app.jobs import Job, JobStatus
from clothclf.app.models_list import describe_model, models_table
from clothclf.app.worker import _Reporter
from clothclf.cli import main
from clothclf.config import MB
from clothclf.console import counted, duration_text
from clothclf.data.datasets import create_dataset
from clothclf.data.features import compute_features
from clothclf.errors import RunError
from clothclf.evaluation.evaluate import evaluate_classifier
from clothclf.runs import checked_run_name, read_json
from clothclf.serving.classifier import load_classifier
from clothclf.serving.export import conversion_estimate, timed_step
from clothclf.training.callbacks import ProgressEvent, StepPrinter, step_text
from clothclf.training.missing_weights import missing_weights_text, weights_failure
from clothclf.training.phases import CONVERTING, FEATURES, FIT_PHASES, HEAD, SAVING, TRUST


def test_train_without_cached_weights_offline_says_one_sentence(
    synthetic_dataset, tmp_path, monkeypatch, capsys
):
    (tmp_path / "keras").mkdir()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    # Keras reads KERAS_HOME once, when it is first imported (maybe by an earlier test): point it here too.
    monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(tmp_path / "keras"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", offline)
    config = tiny_config(synthetic_dataset)
    code = main(
        ["train", "--data", str(synthetic_dataset), "--backbone", "mobilenet_v2", "--weights", "imagenet"]
        + ["--image-size", str(config.image_size), "--epochs", "1", "--head-only"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err and "URL fetch failure" not in err
    [line] = [line for line in err.splitlines() if line.startswith("clothclf: error:")]
    assert "mobilenet_v2" in line and str(tmp_path / "keras") in line
    assert "--weights none" in line and "KERAS_HOME" in line


def test_the_page_sentence_names_the_ways_out_the_page_offers(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    text = missing_weights_text("resnet50", 224, for_page=True)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in text and "KERAS_HOME" in text
    assert "train from scratch" in text and "--" not in text
    assert weights_failure(ValueError("something else"), "resnet50", 224) is None
    assert weights_failure(Exception("URL fetch failure on https://x: None"), "custom_cnn", 224) is None


def test_download_progress_counts_megabytes_and_estimates_the_time_left():
    assert download_progress(0, None, 0.0) == (0.0, "Downloading the dataset… 0 MB")
    fraction, text = download_progress(25 * MB, 100 * MB, 10.0)
    assert fraction == pytest.approx(0.25)
    assert text == "Downloading the dataset… 25 of 100 MB · about 30 s left"
    assert "extracting" in download_progress(100 * MB, 100 * MB, 40.0)[1]


def test_counts_say_one_photo_and_two_photos():
    assert (counted(1, "photo"), counted(2, "photo"), counted(0, "file")) == (
        "1 photo",
        "2 photos",
        "0 files",
    )
    assert counted(1, "file or folder", "files or folders") == "1 file or folder"


def test_a_missing_photo_is_named_once(tiny_run, capsys):
    assert main(["predict", "--model", str(tiny_run), "nope.jpg"]) == 1
    err = capsys.readouterr().err
    assert "nope.jpg: error: no such file" in err and err.count("nope.jpg") == 1
    assert "1 photo in" in err


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", "", "x" * 65, "naïve", "a b"])
def test_a_run_name_must_be_a_safe_folder_name(name, capsys):
    with pytest.raises(RunError, match="cannot name a run"):
        checked_run_name(name)
    assert main(["train", "--name", name, "--epochs", "1"]) == 1
    assert "cannot name a run" in capsys.readouterr().err


def test_a_named_run_is_refused_when_the_name_is_taken(tmp_path, capsys):
    assert checked_run_name("shoes-v2.1") == "shoes-v2.1"
    (Path(os.environ["CLOTHCLF_RUNS_DIR"]) / "mine").mkdir(parents=True)
    assert main(["train", "--name", "mine"]) == 1
    assert "a run named 'mine' is already in" in capsys.readouterr().err


def test_clothclf_runs_shows_what_the_models_page_shows(tiny_run, capsys, monkeypatch):
    monkeypatch.setenv("CLOTHCLF_RUNS_DIR", str(tiny_run.parent))
    assert main(["runs"]) == 0
    header, line = capsys.readouterr().out.splitlines()
    [row] = models_table([describe_model(tiny_run)])  # the page's table
    assert header.split()[:3] == ["model", "dataset", "backbone"] and header.endswith("classes")
    assert (row["dataset"], row["classes"]) == ("ds", "3: blue, green, red")
    assert line.split()[:3] == [row["model"], row["dataset"], row["backbone"]]
    assert re.search(rf"  {re.escape(row['training time'])} +{re.escape(row['classes'])}$", line)
    assert f"{row['val accuracy']:.1f}%" in line and f"{row['test accuracy']:.1f}%" in line
    assert row["training time"] == duration_text(read_json(tiny_run / "run.json")["seconds"])
    assert (duration_text(125.2), duration_text(45), duration_text(None)) == ("2 min 05 s", "45 s", "—")


def test_feature_extraction_counts_the_photos(tiny_run, synthetic_dataset):
    dataset = create_dataset(synthetic_dataset)
    calls = []
    compute_features(tiny_run / "features.tflite", dataset, "train", progress=lambda *a: calls.append(a))
    assert calls and calls[-1] == (len(dataset.train), len(dataset.train))
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_the_job_status_counts_a_step_and_estimates_it_from_its_first_event(tmp_path, monkeypatch):
    monkeypatch.setattr("clothclf.app.worker.STATUS_INTERVAL", 0.0)  # write every event
    job = Job(tmp_path)
    reporter = _Reporter(job, threading.Event(), "2026-12-07T12:00:00+00:00")
    event = ProgressEvent(FEATURES, 0, 0, 0, 1000, 0.0, 10.0, unit="training photos")
    reporter(event)
    assert reporter.last.eta is None and reporter.last.unit == "training photos"
    reporter(dataclasses.replace(event, batch=250, elapsed=15.0))  # 250 photos in 5 s: 750 in 15 s
    status = JobStatus.from_dict(read_json(tmp_path / "status.json"))
    assert (status.batch, status.batches, status.eta) == (250, 1000, pytest.approx(15.0))
    fit = ProgressEvent(HEAD, 1, 10, 0, 20, 0.0, 20.0)  # the fit phase's own clock starts at its batch 0
    reporter(fit)
    reporter(dataclasses.replace(fit, batch=20, fraction=0.1, elapsed=22.0))
    assert reporter.last.eta == pytest.approx(18.0)


def test_the_terminal_shows_steps_with_a_count_and_an_estimate():
    stream = io.StringIO()
    printer = StepPrinter(stream, frozenset({HEAD}), interval=0.0)
    for done in (0, 500, 1000):
        printer(ProgressEvent(FEATURES, 0, 0, done, 1000, 0.0, 0.0, unit="training photos"))
    printer(ProgressEvent(HEAD, 1, 5, 1, 10, 0.0, 0.0))
    lines = stream.getvalue().splitlines()
    assert lines == ["features: 0/1000 training photos", "features: 1000/1000 training photos"]
    text = step_text(ProgressEvent(SAVING, 0, 0, 1, 3, 0.0, 0.0, unit="model files"), 4.0)
    assert text == "saving: 1/3 model files, about 8 s left"


def test_the_library_keeps_litert_s_delegate_note_off_stderr(tiny_run, synthetic_dataset):
    photo = next((synthetic_dataset / "test").rglob("*.png"))
    code = (
        "import sys\nfrom clothclf.serving.classifier import load_classifier\n"
        f"print(load_classifier({str(tiny_run)!r}, backend='litert').predict({str(photo)!r}).label)\n"
        "print('other messages still show', file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "XNNPACK" not in done.stderr and "other messages still show" in done.stderr


def test_a_checkout_folder_named_clothclf_does_not_shadow_the_package(tmp_path):
    # git clones into ``clothclf/``; Python started beside it sees that folder first on its path.
    (tmp_path / "clothclf" / "src").mkdir(parents=True)
    code = "import clothclf; assert callable(clothclf.load_classifier); print(clothclf.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == clothclf.__file__  # the package, not the checkout as a namespace


def test_a_step_with_nothing_to_count_reports_its_time_against_its_estimate(monkeypatch):
    monkeypatch.setattr("clothclf.serving.export.REPORT_INTERVAL", 0.01)
    for estimate in (1000.0, 0.0):  # far ahead, then overrun from the start
        calls, reported = [], threading.Event()

        def progress(seconds, left, calls=calls, reported=reported):
            calls.append((seconds, left))
            if len(calls) > 1:  # the thread's report, after the first made at once
                reported.set()

        with timed_step(estimate, progress):
            assert reported.wait(60)  # the body waits for the thread's first report, however slow the machine
        first, middle, last = calls[0], calls[1], calls[-1]
        assert first == (0.0, estimate) and last[1] == 0.0
        assert [s for s, _ in calls] == sorted(s for s, _ in calls)
        assert middle[1] == (pytest.approx(estimate - middle[0]) if estimate else None)


def test_a_full_run_counts_the_trust_step_and_estimates_the_conversion(synthetic_dataset, tmp_path):
    """A network trained whole converts model.tflite while saving and runs it over every split for the
    trust scores: each is reported, and drawn on the terminal, with its count or its estimate."""
    from clothclf.config import Paths
    from clothclf.training.loop import train

    events = []
    config = tiny_config(synthetic_dataset, backbone="custom_cnn", head_only=False, epochs=1)
    paths = Paths(tmp_path / "data", tmp_path / "cache", tmp_path / "runs", tmp_path / "default")
    train(config, tmp_path / "runs" / "whole", paths=paths, progress=events.append)
    counted_steps = {(e.phase, e.unit): (e.batch, e.batches) for e in events if e.batches}
    dataset = create_dataset(synthetic_dataset)
    for split, unit in (("train", "training photos"), ("validation", "validation photos")):
        assert counted_steps[(TRUST, unit)] == (len(dataset.split(split)),) * 2
    conversion = [e.left for e in events if e.phase == CONVERTING]
    assert conversion[0] > 0 and conversion[-1] == 0.0
    assert [e.phase for e in events].index(CONVERTING) < [e.phase for e in events].index(TRUST)
    fit = [e.left for e in events if e.phase == TRUST and not e.batches and e.left is not None]
    assert fit and fit[-1] == 0.0  # the fitting after the counted photos, with its estimate

    stream = io.StringIO()
    printer = StepPrinter(stream, FIT_PHASES, interval=0.0)
    for event in events:
        printer(event)
    lines = stream.getvalue().splitlines()
    assert f"trust: {len(dataset.train)}/{len(dataset.train)} training photos" in lines
    start = lines.index(next(line for line in lines if line.startswith("converting: 0 s, about ")))
    assert lines[start].endswith(" s left") and re.fullmatch(r"converting: \d+ s", lines[start + 1])


def test_the_job_status_takes_a_conversion_s_own_estimate(tmp_path, monkeypatch):
    monkeypatch.setattr("clothclf.app.worker.STATUS_INTERVAL", 0.0)
    reporter = _Reporter(Job(tmp_path), threading.Event(), "2026-12-07T12:00:00+00:00")
    reporter(ProgressEvent(CONVERTING, 0, 0, 0, 0, 0.5, 30.0, left=21.0))
    status = JobStatus.from_dict(read_json(tmp_path / "status.json"))
    assert (status.phase, status.eta) == (CONVERTING, 21.0)
    reporter(ProgressEvent(CONVERTING, 0, 0, 0, 0, 0.5, 60.0, left=None))  # overran: no estimate
    assert reporter.last.eta is None


def test_the_conversion_estimate_grows_with_the_model():
    from clothclf.modeling.models import build_model

    small, large = (build_model(name, 3, 32, None) for name in ("custom_cnn", "mobilenet_v2"))
    assert 0 < conversion_estimate(small) < conversion_estimate(large)
    text = step_text(ProgressEvent(CONVERTING, 0, 0, 0, 0, 0.0, 0.0, left=20.0), 5.0)
    assert text == "converting: 5 s, about 20 s left"
    assert step_text(ProgressEvent(CONVERTING, 0, 0, 0, 0, 0.0, 0.0), 25.0) == "converting: 25 s"


def test_an_evaluation_counts_the_photos(tiny_run, synthetic_dataset):
    # What `clothclf export --int8` shows while it scores the saved splits again with the int8 model.
    split = create_dataset(synthetic_dataset).validation
    counts: list[tuple[int, int]] = []
    evaluate_classifier(
        load_classifier(tiny_run),
        split,
        synthetic_dataset,
        batch_size=4,
        progress=lambda *c: counts.append(c),
    )
    assert counts == [(min(done, len(split)), len(split)) for done in range(4, len(split) + 4, 4)]
