"""Per-image prediction rows: written by training and evaluation, read back by the app and calibration.

A row holds file, true, predicted, confidence, correct, top3 (``"shirt:0.8100;t-shirt:0.1200;..."``),
one ``p_<class>`` probability column per class and, for runs with trust scores, status and ood_score.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def prediction_rows(
    files: Sequence[str | Path],
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    root: str | Path | None = None,
    trust: Sequence[tuple[str, float]] | None = None,
) -> list[dict]:
    """One row per image: file (relative to ``root`` if given), true, predicted, confidence, correct, top-3,
    probabilities, and (when ``trust`` gives each image's (status, ood_score)) status and ood_score."""
    rows = []
    for i, (path, label, p) in enumerate(zip(files, y_true, probs)):
        order = np.argsort(-p)[:3]
        name = str(Path(path).relative_to(root)) if root else str(path)
        rows.append(
            {
                "file": name,
                "true": class_names[int(label)],
                "predicted": class_names[int(order[0])],
                "confidence": float(p[order[0]]),
                "correct": bool(int(label) == int(order[0])),
                "top3": ";".join(f"{class_names[j]}:{p[j]:.4f}" for j in order),
                **{f"p_{name_}": float(p[j]) for j, name_ in enumerate(class_names)},
                **({"status": trust[i][0], "ood_score": float(trust[i][1])} if trust is not None else {}),
            }
        )
    return rows


def trust_columns(rows: Sequence[dict[str, str]]) -> list[tuple[str, float]] | None:
    """The (status, ood_score) of saved rows, or None when they have no such columns."""
    if not rows or "ood_score" not in rows[0]:
        return None
    return [(row["status"], float(row["ood_score"])) for row in rows]


def parse_top3(row: dict[str, str]) -> list[tuple[str, float]]:
    """The ``top3`` column of a prediction row (``"shirt:0.8100;t-shirt:0.1200;..."``) as pairs."""
    pairs = []
    for item in row.get("top3", "").split(";"):
        if item:
            label, _, prob = item.rpartition(":")
            pairs.append((label, float(prob)))
    return pairs


def prediction_arrays(
    rows: Sequence[dict[str, str]], class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Integer true labels and the (n, k) probability matrix stored in prediction rows."""
    index = {name: i for i, name in enumerate(class_names)}
    y_true = np.asarray([index[row["true"]] for row in rows], dtype=int)
    probs = np.asarray(
        [[float(row[f"p_{name}"]) for name in class_names] for row in rows], dtype=np.float64
    ).reshape(len(rows), len(class_names))
    return y_true, probs
