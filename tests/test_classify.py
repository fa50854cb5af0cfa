"""Batch classification of uploads: limits, per-file errors, low confidence and the CSV download."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from helpers import CLASSES
from PIL import Image

from clothclf.app.tables import display_name, results_csv, results_table, status_counts
from clothclf.app.uploads import UploadResult, classify_uploads, preview, square_thumbnail
from clothclf.config import Limits
from clothclf.serving.batch import prediction_row
from clothclf.serving.classifier import Classifier, Prediction, load_classifier
from clothclf.serving.result_files import columns


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (20, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def mean_colour_classifier() -> Classifier:
    """A classifier without a model: the probabilities are the image's mean colour shares."""

    def runner(batch: np.ndarray) -> np.ndarray:
        means = batch.mean(axis=(1, 2)) + 1.0
        return means / means.sum(axis=1, keepdims=True)

    return Classifier(runner, CLASSES, 8, backend="test", model_dir=Path("."))


def test_each_upload_gets_a_prediction_in_order():
    uploads = [("r.png", png_bytes((250, 0, 0))), ("b.png", png_bytes((0, 0, 250)))]
    results = classify_uploads(mean_colour_classifier(), uploads, Limits(), top_k=2)
    assert [r.name for r in results] == ["r.png", "b.png"]
    assert [r.prediction.label for r in results] == ["red", "blue"]
    assert all(r.ok and r.error is None for r in results)
    assert len(results[0].prediction.top_k) == 2
    assert sum(results[0].prediction.probabilities.values()) == pytest.approx(1.0)


def test_a_bad_file_is_reported_and_the_others_still_run():
    uploads = [("notes.png", b"this is not an image"), ("empty.jpg", b""), ("g.png", png_bytes((0, 250, 0)))]
    results = classify_uploads(mean_colour_classifier(), uploads, Limits())
    assert not results[0].ok and "not an image" in results[0].error
    assert not results[1].ok and "empty" in results[1].error
    assert results[2].prediction.label == "green"


def test_too_big_too_many_pixels_and_too_many_files_say_the_limit():
    limits = Limits(max_upload_mb=1, max_pixels=10_000, max_files_per_batch=2)
    big = b"\0" * (1024 * 1024 + 1)
    uploads = [
        ("big.jpg", big),
        ("wide.png", png_bytes((1, 2, 3), (200, 100))),
        ("ok.png", png_bytes((9, 9, 9))),
    ]
    results = classify_uploads(mean_colour_classifier(), uploads, limits)
    assert "1 MB" in results[0].error
    assert "10,000 pixels" in results[1].error
    assert "at most 2 files" in results[2].error and not results[2].ok


def test_batch_total_and_count_limits_refuse_files_before_reading_them():
    limits = Limits(max_files_per_batch=3, max_batch_mb=1)
    half = png_bytes((250, 0, 0)) + bytes(600 * 1024)  # Pillow ignores the tail

    class Unreadable(io.BytesIO):
        def read(self, *args):  # a refused file is never read
            raise AssertionError("read a refused file")

    uploads = [("a.png", io.BytesIO(half)), ("b.png", Unreadable(half)), ("c.png", png_bytes((0, 0, 250)))]
    uploads.append(("d.png", Unreadable(png_bytes((0, 250, 0)))))
    results = classify_uploads(mean_colour_classifier(), uploads, limits)
    assert [r.ok for r in results] == [True, False, True, False]
    assert "over 1 MB in total" in results[1].error and "1 MB in total." in results[1].error
    assert "at most 3 files per batch" in results[3].error and "Up to 3 photos at once" in results[3].error


def test_uploads_are_read_in_place_and_can_be_shown_after_classifying(tmp_path):
    upload = io.BytesIO(png_bytes((0, 0, 250), (60, 30)))
    path = tmp_path / "example.png"
    path.write_bytes(upload.getvalue())
    results = classify_uploads(mean_colour_classifier(), [("u.png", upload), ("p.png", path)], Limits())
    assert [r.prediction.label for r in results] == ["blue", "blue"]
    assert preview(upload, 40).shape == (20, 40, 3)  # the classified upload reads whole again
    assert square_thumbnail(upload, 10).shape == (10, 10, 3)
    assert not upload.closed


def test_unsure_answers_go_to_review_and_are_counted():
    [result] = classify_uploads(mean_colour_classifier(), [("x.png", png_bytes((90, 80, 85)))], Limits())
    assert result.prediction.confidence < 0.5 and result.prediction.status == "review"
    assert status_counts([result]) == {"accept": 0, "review": 1, "unknown": 0}
    assert "status,ood_score" in results_csv([result]).splitlines()[0]


def test_results_table_and_csv_hold_every_file_and_class():
    uploads = [("r.png", png_bytes((250, 0, 0))), ("bad.png", b"xx")]
    results = classify_uploads(mean_colour_classifier(), uploads, Limits())
    table = results_table(results)
    assert table[0]["label"] == "red" and table[1]["label"] is None and table[1]["error"]
    assert list(table[0]) == list(columns())  # the table shows the CSV's columns
    rows = list(csv.DictReader(io.StringIO(results_csv(results))))
    assert [r["file"] for r in rows] == ["r.png", "bad.png"]
    assert rows[0]["closest"] == "red" and rows[1]["label"] == "" and rows[1]["error"]


def test_the_app_csv_is_the_cli_csv(tmp_path):
    """The same photos give the same CSV text from the app's download and from ``predict --out``."""
    from clothclf.serving.result_files import open_result_file

    classifier = mean_colour_classifier()
    names = [("r.png", png_bytes((250, 0, 0))), ("bad.png", b"xx")]
    app_text = results_csv(classify_uploads(classifier, names, Limits()))
    out = open_result_file(tmp_path / "cli.csv")
    out.write(prediction_row("r.png", classifier.predict(names[0][1], top_k=3)))  # as predict_catalog writes
    out.close()
    cli_lines = (tmp_path / "cli.csv").read_text().splitlines()
    app_lines = app_text.splitlines()
    assert app_lines[0] == cli_lines[0] == ",".join(columns())
    assert app_lines[1] == cli_lines[1]


def test_an_unknown_photo_is_called_unknown_with_its_closest_class():
    prediction = Prediction("hat", 0.9, (("hat", 0.9), ("shirt", 0.1)), {"hat": 0.9, "shirt": 0.1}, "unknown", 7.5)
    data = prediction.to_dict()
    assert (data["label"], data["closest"], data["status"]) == ("unknown", "hat", "unknown")
    assert tuple(data) == columns()[1:-1]
    text = results_csv([UploadResult("shark.png", prediction)])
    row = next(csv.DictReader(io.StringIO(text)))
    assert (row["label"], row["closest"]) == ("unknown", "hat")
    assert results_table([UploadResult("shark.png", prediction)])[0]["label"] == "unknown"


def test_results_csv_of_only_errors_has_a_header():
    text = results_csv(classify_uploads(mean_colour_classifier(), [("a", b"")], Limits()))
    assert text.splitlines()[0].startswith("file,label,closest,confidence")


def test_preview_keeps_the_aspect_ratio_and_never_upscales():
    assert preview(png_bytes((1, 2, 3), (800, 400)), max_side=200).shape == (100, 200, 3)
    assert preview(png_bytes((1, 2, 3), (30, 20)), max_side=200).shape == (20, 30, 3)


def test_square_thumbnail_crops_the_centre(tmp_path):
    image = Image.new("RGB", (300, 100), (255, 0, 0))
    image.paste((0, 0, 255), (100, 0, 200, 100))  # a blue middle third
    image.save(tmp_path / "wide.png")
    thumb = square_thumbnail(tmp_path / "wide.png", size=50)
    assert thumb.shape == (50, 50, 3)
    assert (thumb[:, :, 2] > 200).all() and (thumb[:, :, 0] < 50).all()


def test_display_name():
    assert display_name("t-shirt") == "T-shirt"
    assert display_name("long_sleeve") == "Long sleeve"


def test_real_litert_model_classifies_uploads(tiny_run):
    classifier = load_classifier(tiny_run, backend="litert")
    results = classify_uploads(classifier, [("b.png", png_bytes((10, 20, 240)))], Limits())
    assert results[0].prediction.label in classifier.class_names
    assert 0.0 < results[0].prediction.confidence <= 1.0
