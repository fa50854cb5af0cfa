"""The app's catalog: models a session can pick, where their images are, and their prediction rows."""

from __future__ import annotations

import datetime
import shutil

import numpy as np
import pytest

from clothclf.app.models_list import (
    dataset_root_for,
    describe_model,
    evaluated_splits,
    example_photos,
    find_model,
    image_path,
    list_models,
    models_table,
    recorded_dataset_root,
    same_classes,
)
from clothclf.app.tables import page_count, page_of, per_class_rows, select_predictions
from clothclf.config import Paths
from clothclf.errors import DatasetError
from clothclf.evaluation.predictions import parse_top3, prediction_arrays
from clothclf.runs import load_run, read_json, record_model_digests, save_evaluation, write_json

ROWS = [
    {
        "file": "validation/red/a.png",
        "true": "red",
        "predicted": "blue",
        "confidence": "0.6",
        "top3": "blue:0.6000;red:0.3000;green:0.1000",
        "p_red": "0.3",
        "p_green": "0.1",
        "p_blue": "0.6",
    },
    {
        "file": "validation/red/b.png",
        "true": "red",
        "predicted": "red",
        "confidence": "0.9",
        "top3": "red:0.9000;blue:0.0600;green:0.0400",
        "p_red": "0.9",
        "p_green": "0.04",
        "p_blue": "0.06",
    },
    {
        "file": "validation/green/c.png",
        "true": "green",
        "predicted": "blue",
        "confidence": "0.8",
        "top3": "blue:0.8000;green:0.1500;red:0.0500",
        "p_red": "0.05",
        "p_green": "0.15",
        "p_blue": "0.8",
    },
]


def test_list_models_puts_the_default_first_and_skips_incomplete_runs(tiny_run, tmp_path):
    runs_dir = tmp_path / "runs"
    shutil.copytree(tiny_run, runs_dir / "copy")
    shutil.copytree(tiny_run, runs_dir / ".partial-unfinished")
    (runs_dir / "empty").mkdir()
    paths = Paths(tmp_path / "data", tmp_path / "cache", runs_dir, tiny_run)
    entries = list_models(paths)
    assert [e.is_default for e in entries] == [True, False]
    assert entries[0].label.endswith("(default)") and entries[1].path == runs_dir / "copy"
    assert find_model(entries, runs_dir / "copy") is entries[1]
    assert find_model(entries, tmp_path) is None


def test_list_models_without_a_default_model(tiny_run, tmp_path):
    paths = Paths(tmp_path, tmp_path, tiny_run.parent, tmp_path / "missing")
    entries = list_models(paths)
    assert [e.path for e in entries] == [tiny_run]
    assert describe_model(tmp_path / "missing") is None


def test_models_table_reports_saved_metrics_only(tiny_run):
    [row] = models_table([describe_model(tiny_run, is_default=True)])
    saved = read_json(tiny_run / "metrics_validation.json")
    assert row["val accuracy"] == pytest.approx(100 * saved["accuracy"])  # percent, like every accuracy
    assert row["val macro-F1"] == pytest.approx(saved["macro_f1"])
    tested = read_json(tiny_run / "metrics_test.json")  # training evaluates the test part too
    assert row["test accuracy"] == pytest.approx(100 * tested["accuracy"])
    assert row["backbone"] == "mobilenet_v2" and row["image size"] == 32
    assert row["classes"] == "3: blue, green, red" and row["dataset"] == "ds"
    created = read_json(tiny_run / "run.json")["created"]
    assert row["created"] == datetime.datetime.fromisoformat(created)  # the whole date and time


def test_only_models_of_the_same_classes_are_compared_class_by_class(tiny_run, tmp_path):
    other = shutil.copytree(tiny_run, tmp_path / "other")
    write_json(other / "class_names.json", ["blue", "green", "red"])  # same classes, other order
    fewer = shutil.copytree(tiny_run, tmp_path / "fewer")
    write_json(fewer / "class_names.json", ["red", "green"])
    write_json(fewer / "run.json", {**read_json(fewer / "run.json"), "num_classes": 2})
    tiny, reordered, two = (describe_model(p) for p in (tiny_run, other, fewer))
    assert same_classes(tiny, reordered)
    assert not same_classes(tiny, two) and two.num_classes == 2


def test_evaluated_splits(tiny_run):
    assert evaluated_splits(load_run(tiny_run)) == ["validation", "test"]


def test_evaluated_splits_list_saved_evaluations_after_the_splits(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    rows = load_run(run).predictions("test")
    save_evaluation(run, "shop", {**read_json(run / "metrics_test.json"), "split": "shop"}, rows)
    save_evaluation(run, "attic", {"accuracy": 0.5}, rows)
    assert evaluated_splits(load_run(run)) == ["validation", "test", "attic", "shop"]
    assert load_run(run).metrics("shop")["split"] == "shop"


def test_dataset_root_is_the_recorded_root_else_for_default_runs_the_default(tiny_run, tmp_path, monkeypatch):
    run = load_run(tiny_run)
    recorded = read_json(tiny_run / "config.json")["dataset"]["root"]
    assert dataset_root_for(run) == type(tmp_path)(recorded)

    moved = tmp_path / "moved"
    shutil.copytree(tiny_run, moved)
    config = read_json(moved / "config.json")
    config["dataset"]["root"] = str(tmp_path / "gone")
    write_json(moved / "config.json", config)
    monkeypatch.setenv("CLOTHCLF_DATA_DIR", str(tmp_path / "data"))
    assert dataset_root_for(load_run(moved)) is None
    (tmp_path / "data" / "train").mkdir(parents=True)
    # Its own photos are gone (an uploaded zip after its run): the default dataset must not stand in.
    assert dataset_root_for(load_run(moved)) is None
    assert recorded_dataset_root(load_run(moved)) == str(tmp_path / "gone")
    assert dataset_root_for(None) == tmp_path / "data"
    config["dataset"]["root"] = None  # a shipped run records no folder: the default dataset is its own
    write_json(moved / "config.json", config)
    assert dataset_root_for(load_run(moved)) == tmp_path / "data"


def test_image_path_stays_inside_the_root(tmp_path):
    (tmp_path / "validation" / "red").mkdir(parents=True)
    assert image_path(tmp_path, "validation/red/a.png") == (tmp_path / "validation/red/a.png").resolve()
    for bad in ("../secret.png", "/etc/passwd", "validation/../../x.png"):
        with pytest.raises(DatasetError, match="outside"):
            image_path(tmp_path, bad)
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(DatasetError):
        image_path(tmp_path, "link/passwd")


def test_example_photos_one_per_class_test_split_first(synthetic_dataset):
    photos = example_photos(synthetic_dataset)
    assert [p.parent.name for p in photos] == ["blue", "green", "red"]
    assert all(p.parent.parent.name == "test" for p in photos)
    assert example_photos(synthetic_dataset, limit=2) == photos[:2]
    assert example_photos(None) == []


def test_example_photos_fall_back_to_validation(tmp_path):
    (tmp_path / "validation" / "hat").mkdir(parents=True)
    (tmp_path / "validation" / "hat" / "h.jpg").write_bytes(b"x")
    (tmp_path / "validation" / "hat" / "notes.txt").write_text("x")
    assert example_photos(tmp_path) == [tmp_path / "validation" / "hat" / "h.jpg"]


def test_select_predictions_filters_and_sorts_most_confident_first():
    assert [r["file"] for r in select_predictions(ROWS, mistakes_only=True)] == [
        "validation/green/c.png",
        "validation/red/a.png",
    ]
    assert [r["file"] for r in select_predictions(ROWS, true="red", predicted="blue")] == [
        "validation/red/a.png"
    ]
    assert [r["file"] for r in select_predictions(ROWS, min_confidence=0.85)] == ["validation/red/b.png"]
    assert select_predictions(ROWS, true="blue") == []


def test_parse_top3_and_prediction_arrays():
    assert parse_top3(ROWS[0]) == [("blue", 0.6), ("red", 0.3), ("green", 0.1)]
    y_true, probs = prediction_arrays(ROWS, ["red", "green", "blue"])
    assert y_true.tolist() == [0, 0, 1]
    np.testing.assert_allclose(probs[2], [0.05, 0.15, 0.8])
    assert prediction_arrays([], ["a", "b"])[1].shape == (0, 2)


def test_pages():
    items = list(range(25))
    assert page_count(25, 12) == 3 and page_count(0, 12) == 1
    assert page_of(items, 3, 12) == [24]
    assert page_of(items, 9, 12) == [24]
    assert page_of(items, 0, 12) == items[:12]


def test_per_class_rows(tiny_run):
    metrics = read_json(tiny_run / "metrics_validation.json")
    rows = per_class_rows(metrics)
    assert [r["class"] for r in rows] == metrics["class_names"]
    assert set(rows[0]) == {"class", "precision", "recall", "f1", "support"}


def test_earlier_shipped_models_beside_the_default_are_listed_after_it(tmp_path):
    models = tmp_path / "models"
    for name in ("default", "mobilenet_v2_224_v1", "notes"):
        (models / name).mkdir(parents=True)
    for name in ("default", "mobilenet_v2_224_v1"):
        (models / name / "class_names.json").write_text('["a", "b"]')
        (models / name / "model.tflite").write_bytes(b"")
        (models / name / "run.json").write_text("{}")
        record_model_digests(models / name)  # only folders whose files can be verified are listed
    paths = Paths(tmp_path / "data", tmp_path / "cache", tmp_path / "runs", models / "default")
    entries = list_models(paths)
    assert [(e.name, e.is_default) for e in entries] == [("default", True), ("mobilenet_v2_224_v1", False)]
