"""Risk and coverage: how accurate the accepted answers are against how many are accepted (no plotting).

Computed from saved prediction rows (``predictions_<split>.csv``): each row's confidence, whether it
was right and, for runs with trust scores, its status. Photos called ``unknown`` are never accepted;
the others are accepted from the most confident down, so each point of the curve is one review
threshold. The run's own threshold (``run.json``'s ``trust``) is its operating point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def risk_coverage(rows: Sequence[Mapping[str, str]]) -> list[dict]:
    """Points (threshold, coverage, accuracy, accepted) from the most confident answer down, unknowns excluded."""
    known = [r for r in rows if r.get("status") != "unknown"]
    confidence = np.asarray([float(r["confidence"]) for r in known])
    correct = np.asarray([str(r["correct"]) == "True" for r in known])
    order = np.argsort(-confidence, kind="stable")
    hits = np.cumsum(correct[order])
    points = []
    for n, (index, right) in enumerate(zip(order, hits), start=1):
        if n == len(order) or confidence[order[n]] < confidence[index]:  # one point per distinct threshold
            points.append(
                {
                    "threshold": float(confidence[index]),
                    "coverage": n / len(rows),
                    "accuracy": float(right) / n,
                    "accepted": n,
                }
            )
    return points


def operating_point(rows: Sequence[Mapping[str, str]], review_confidence: float) -> dict:
    """Shares of accepted, review and unknown answers at the run's threshold, and the accepted accuracy."""
    n = len(rows)
    unknown = [r.get("status") == "unknown" for r in rows]
    accepted = [not u and float(r["confidence"]) >= review_confidence for r, u in zip(rows, unknown)]
    right = sum(str(r["correct"]) == "True" for r, a in zip(rows, accepted) if a)
    return {
        "threshold": review_confidence,
        "coverage": sum(accepted) / n if n else 0.0,
        "accuracy": right / sum(accepted) if any(accepted) else None,
        "review": (n - sum(accepted) - sum(unknown)) / n if n else 0.0,
        "unknown": sum(unknown) / n if n else 0.0,
    }


def unknown_effect(point: dict, split: str) -> str:
    """The OOD threshold's effect in words, e.g. "2.2% of the test garments are set aside as unknown"."""
    return (
        f"{point['unknown']:.1%} of the {split} photos, all garments of the model's classes, are set aside as "
        f"unknown; {point['review']:.1%} go to review and {point['coverage']:.1%} are accepted"
        + (f", {point['accuracy']:.1%} of them correctly." if point["accuracy"] is not None else ".")
    )
