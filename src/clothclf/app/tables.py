"""Tables the app shows: prediction rows filtered and paged, per-class metrics, upload results as rows
and CSV. Tables are lists of dicts (no pandas) so any front end can render them; no Streamlit here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clothclf.app.uploads import UploadResult
from clothclf.errors import ClothclfError
from clothclf.serving.batch import prediction_row
from clothclf.serving.result_files import columns, csv_text
from clothclf.serving.trust import STATUSES


def select_predictions(
    rows: Sequence[dict[str, str]],
    *,
    true: str | None = None,
    predicted: str | None = None,
    min_confidence: float = 0.0,
    mistakes_only: bool = False,
) -> list[dict[str, str]]:
    """Prediction rows matching the filters (None = any class), most confident first."""
    picked = [
        row
        for row in rows
        if (true is None or row["true"] == true)
        and (predicted is None or row["predicted"] == predicted)
        and float(row["confidence"]) >= min_confidence
        and not (mistakes_only and row["true"] == row["predicted"])
    ]
    return sorted(picked, key=lambda row: (-float(row["confidence"]), row["file"]))


def page_of(items: Sequence[Any], page: int, per_page: int) -> list[Any]:
    """Items of the 1-based ``page`` (clamped to the available pages)."""
    pages = page_count(len(items), per_page)
    page = min(max(page, 1), pages)
    return list(items[(page - 1) * per_page : page * per_page])


def page_count(n_items: int, per_page: int) -> int:
    """How many pages ``n_items`` fill (at least 1)."""
    return max(1, -(-n_items // per_page))


def per_class_rows(metrics: dict) -> list[dict[str, Any]]:
    """The per-class part of saved metrics as table rows (class, precision, recall, F1, support)."""
    return [
        {"class": name, **{key: values[key] for key in ("precision", "recall", "f1", "support")}}
        for name, values in metrics["per_class"].items()
    ]


def display_name(label: str) -> str:
    """A class name as people write it: ``"t-shirt"`` -> ``"T-shirt"``, ``"long_sleeve"`` -> ``"Long sleeve"``."""
    text = label.replace("_", " ")
    return text[:1].upper() + text[1:]


def status_counts(results: Sequence[UploadResult]) -> dict[str, int]:
    """How many classified photos are accept, review and unknown."""
    statuses = [r.prediction.status for r in results if r.prediction]
    return {name: statuses.count(name) for name in STATUSES}


def grouped_errors(results: Sequence[UploadResult]) -> list[tuple[str, list[str]]]:
    """The failed files grouped by their error, in upload order: ``[(error, [names])]``."""
    groups: dict[str, list[str]] = {}
    for result in results:
        if result.error is not None:
            groups.setdefault(result.error, []).append(result.name)
    return list(groups.items())


def result_rows(results: Sequence[UploadResult]) -> list[dict]:
    """One row per file, as ``clothclf predict`` writes it (:func:`~clothclf.serving.batch.prediction_row`):
    file, label (a class or ``unknown``), closest class, confidence, status, ood_score, top_k, error."""
    return [
        prediction_row(r.name, r.prediction if r.prediction else ClothclfError(r.error or "not classified"))
        for r in results
    ]


def results_table(results: Sequence[UploadResult]) -> list[dict]:
    """:func:`result_rows` for display, in the columns of the CSV file: numbers rounded, the top k as text."""
    return [
        {
            **{name: row.get(name) for name in columns()},
            "confidence": _rounded(row.get("confidence")),
            "ood_score": _rounded(row.get("ood_score")),
            "top_k": "; ".join(f"{t['label']} {t['probability']:.1%}" for t in row.get("top_k", [])),
            "error": row.get("error", ""),
        }
        for row in result_rows(results)
    ]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def results_csv(results: Sequence[UploadResult]) -> str:
    """The results as CSV text, the same columns in the same order as ``clothclf predict --out x.csv``."""
    return csv_text(result_rows(results))
