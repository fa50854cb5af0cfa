"""Evaluation metrics on small hand-checked examples: the numbers the report and the CLI print."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clothclf.evaluation.metrics import (
    compute_metrics,
    confusion_matrix,
    expected_calibration_error,
    most_confused,
    reliability_table,
)
from clothclf.evaluation.predictions import prediction_rows

NAMES = ("hat", "pants", "shoes", "skirt")
# Four images: two right (hat, pants), shoes taken for pants, skirt taken for hat at 97% (skirt at 0).
Y_TRUE = np.array([0, 1, 2, 3])
PROBS = np.array(
    [
        [0.7, 0.1, 0.1, 0.1],
        [0.1, 0.6, 0.2, 0.1],
        [0.1, 0.5, 0.4, 0.0],
        [0.97, 0.02, 0.01, 0.0],
    ]
)


def test_headline_metrics_by_hand():
    metrics = compute_metrics(Y_TRUE, PROBS, NAMES)
    assert metrics["n_images"] == 4 and metrics["class_names"] == list(NAMES)
    assert metrics["accuracy"] == 0.5
    assert metrics["top3_accuracy"] == 0.75  # skirt is last for the fourth image
    assert metrics["confusion_matrix"] == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]]
    assert metrics["per_class"]["hat"] == {
        "precision": 0.5,
        "recall": 1.0,
        "f1": pytest.approx(2 / 3),
        "support": 1,
    }
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0 + 0) / 4)
    # The zero for the true skirt is floored at 1e-7, so the log loss is large but finite.
    expected = -(math.log(0.7) + math.log(0.6) + math.log(0.4) + math.log(1e-7)) / 4
    assert metrics["log_loss"] == pytest.approx(expected, rel=1e-5)
    one_hot = np.eye(4)[Y_TRUE]
    assert metrics["mae"] == pytest.approx(np.abs(one_hot - PROBS).mean())
    assert metrics["rmse"] == pytest.approx(math.sqrt(((one_hot - PROBS) ** 2).mean()))


def test_macro_averages_leave_out_classes_that_do_not_occur():
    # Only hats and pants in the folder, all right: the two classes the folder lacks do not count as 0.
    metrics = compute_metrics(np.array([0, 1]), PROBS[:2], NAMES)
    assert metrics["macro_f1"] == metrics["macro_recall"] == metrics["macro_precision"] == 1.0
    assert metrics["per_class"]["skirt"]["support"] == 0


def test_calibration_table_and_error():
    table = reliability_table(Y_TRUE, PROBS, n_bins=5)
    # Confidences 0.7 (right), 0.6 (right), 0.5 (wrong), 0.97 (wrong) in bins of width 0.2.
    assert [(round(row["low"], 6), row["count"], row["accuracy"]) for row in table] == [
        (0.4, 2, 0.5),
        (0.6, 1, 1.0),
        (0.8, 1, 0.0),
    ]
    expected = (2 * abs(0.5 - 0.55) + abs(1.0 - 0.7) + abs(0.0 - 0.97)) / 4
    assert expected_calibration_error(Y_TRUE, PROBS, n_bins=5) == pytest.approx(expected)
    perfect = np.eye(4)[Y_TRUE]
    assert expected_calibration_error(Y_TRUE, perfect) == 0.0


def test_most_confused_pairs_largest_first():
    matrix = confusion_matrix(np.array([0, 0, 0, 1, 2, 2]), np.array([1, 1, 2, 0, 2, 2]), 3)
    assert most_confused(matrix, ("a", "b", "c")) == [("a", "b", 2), ("a", "c", 1), ("b", "a", 1)]
    assert most_confused(matrix, ("a", "b", "c"), min_count=2) == [("a", "b", 2)]


def test_prediction_rows_hold_what_the_mistakes_page_shows(tmp_path):
    files = [tmp_path / "test" / NAMES[i] / f"{i}.jpg" for i in range(4)]
    rows = prediction_rows(files, Y_TRUE, PROBS, NAMES, root=tmp_path)
    wrong = rows[2]
    assert wrong["file"] == "test/shoes/2.jpg" and wrong["true"] == "shoes" and wrong["predicted"] == "pants"
    assert wrong["confidence"] == 0.5 and wrong["correct"] is False
    assert wrong["top3"] == "pants:0.5000;shoes:0.4000;hat:0.1000"
    assert [row["correct"] for row in rows] == [True, True, False, False]
