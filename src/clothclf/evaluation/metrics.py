"""Metrics from predicted probabilities: arrays and tables in, dicts and tables out (no plotting, no TF)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """ECE: the confidence-weighted gap between confidence and accuracy over equal-width bins."""
    table = reliability_table(y_true, probs, n_bins)
    n = len(y_true)
    return float(sum(row["count"] / n * abs(row["accuracy"] - row["confidence"]) for row in table))


def reliability_table(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> list[dict]:
    """Per confidence bin: its range, image count, mean confidence and accuracy (non-empty bins only)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            rows.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "count": int(mask.sum()),
                    "confidence": float(confidence[mask].mean()),
                    "accuracy": float(correct[mask].mean()),
                }
            )
    return rows


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    return skm.confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))


def most_confused(
    matrix: np.ndarray, class_names: Sequence[str], min_count: int = 1
) -> list[tuple[str, str, int]]:
    """(true, predicted, count) for every off-diagonal cell with at least ``min_count``, largest first."""
    pairs = [
        (class_names[i], class_names[j], int(matrix[i, j]))
        for i in range(len(class_names))
        for j in range(len(class_names))
        if i != j and matrix[i, j] >= min_count
    ]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))


def cell_count(matrix: np.ndarray, class_names: Sequence[str], true: object, predicted: object) -> int:
    """Images in the confusion-matrix cell (``true``, ``predicted``); 0 if either is not a class."""
    if true not in class_names or predicted not in class_names:
        return 0
    return int(matrix[list(class_names).index(true), list(class_names).index(predicted)])


def default_cell(matrix: np.ndarray, class_names: Sequence[str]) -> tuple[str, str]:
    """The cell to show first: the most confused pair, or the first class's diagonal if none is."""
    pairs = most_confused(matrix, class_names)
    return pairs[0][:2] if pairs else (class_names[0], class_names[0])


def _floored(probs: np.ndarray, floor: float = 1e-7) -> np.ndarray:
    """Probabilities with every entry at least ``floor`` (one confident zero would make the log loss
    infinite), renormalised so each row still sums to one."""
    floored = np.clip(probs, floor, 1.0)
    return floored / floored.sum(axis=1, keepdims=True)


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> dict:
    """Every summary metric of one evaluation, JSON-ready.

    Accuracy, top-3 accuracy, per-class precision/recall/F1/support, macro (over the classes that
    occur, true or predicted) and weighted averages,
    confusion matrix, log loss, expected calibration error, and the regression-style scores of the
    probabilities against one-hot labels (MAE, MSE, RMSE, R²).
    """
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    k = len(class_names)
    labels = list(range(k))
    y_pred = probs.argmax(axis=1)
    one_hot = np.eye(k)[y_true]
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    mse = skm.mean_squared_error(one_hot, probs)
    # Macro averages over the classes that occur (true or predicted), as scikit-learn does without
    # ``labels``: a folder holding some of the classes is not marked down for the ones it lacks.
    occur = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    return {
        "n_images": int(len(y_true)),
        "class_names": list(class_names),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "top3_accuracy": float(
            skm.top_k_accuracy_score(y_true, probs, k=min(3, k), labels=labels) if k > 3 else 1.0
        ),
        "macro_precision": float(precision[occur].mean()),
        "macro_recall": float(recall[occur].mean()),
        "macro_f1": float(f1[occur].mean()),
        "weighted_f1": float(
            skm.f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
        ),
        "log_loss": float(skm.log_loss(y_true, _floored(probs), labels=labels)),
        "ece": expected_calibration_error(y_true, probs),
        "mae": float(skm.mean_absolute_error(one_hot, probs)),
        "mse": float(mse),
        "rmse": float(np.sqrt(mse)),
        "r2": float(skm.r2_score(one_hot, probs)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, k).tolist(),
    }
