"""What a new user meets in the first hour: offline weights, download progress, plurals, messages."""

from __future__ import annotations

import urllib.error

import pytest
from helpers import tiny_config

from clothclf.app.download import download_progress
from clothclf.cli import main
from clothclf.config import MB
from clothclf.console import counted
from clothclf.training.missing_weights import missing_weights_text, weights_failure


def test_train_without_cached_weights_offline_says_one_sentence(
    synthetic_dataset, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

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
