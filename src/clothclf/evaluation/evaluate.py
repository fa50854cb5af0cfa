"""Evaluate a classifier on a split, and recalibrate a saved run from its validation predictions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from clothclf.data.datasets import Split, decode_chunks, warn_skipped
from clothclf.errors import DatasetError, RunError
from clothclf.evaluation.metrics import compute_metrics
from clothclf.evaluation.predictions import prediction_arrays, prediction_rows, trust_columns
from clothclf.numerics import MIN_CALIBRATION_IMAGES, apply_temperature, fit_temperature
from clothclf.runs import (
    SUMMARY,
    EvaluationFiles,
    read_class_names,
    read_csv,
    read_json,
    read_summary,
    saved_evaluations,
    training_evaluation,
    write_csv,
    write_json,
)


def evaluate_classifier(
    classifier,
    split: Split,
    root: str | Path,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict, list[dict]]:
    """Run ``classifier`` (see :mod:`clothclf.serving.classifier`) over ``split``; return (metrics, per-image rows).

    The split is decoded and run ``batch_size`` photos at a time (never held in memory whole). Files
    that cannot be decoded are skipped (one warning) and listed under ``metrics["skipped"]``.
    ``progress(done, total)`` counts the photos as they are done.
    """
    answers, labels, files, skipped = [], [], [], []
    for chunk in decode_chunks(split, classifier.image_size, batch_size):
        answers += classifier.answers(chunk.images, top_k=1) if len(chunk.labels) else []
        labels += chunk.labels.tolist()
        files += chunk.files
        skipped += chunk.skipped
        if progress is not None:
            progress(len(files) + len(skipped), len(split))
    warn_skipped(skipped)
    if not answers:
        raise DatasetError("no readable images to evaluate")
    names = classifier.class_names
    probs = np.asarray([[a.probabilities[name] for name in names] for a in answers])
    metrics = compute_metrics(np.asarray(labels), probs, names)
    metrics["skipped"] = skipped
    trust = [(a.status, a.ood_score) for a in answers] if classifier.trust.scored else None
    return metrics, prediction_rows(files, np.asarray(labels), probs, names, root=root, trust=trust)


def recalibrate_run(model_dir: str | Path) -> tuple[float, float]:
    """Fit a run's temperature again on its saved validation predictions and rescale every saved evaluation.

    For runs saved before calibration existed: the saved probabilities are rescaled and their metrics
    recomputed (the answers, and so accuracy, do not change), and the run summary records the new
    temperature. Returns (old, new) temperature.
    """
    model_dir = Path(model_dir)
    validation = training_evaluation(model_dir)
    if not validation.predictions.is_file() or not (model_dir / SUMMARY).is_file():
        raise RunError(f"{model_dir}: needs {SUMMARY} and {validation.predictions.name} to calibrate")
    class_names = read_class_names(model_dir)
    summary = read_summary(model_dir)
    val_true, val_probs = prediction_arrays(read_csv(validation.predictions), class_names)
    if len(val_true) < MIN_CALIBRATION_IMAGES:
        raise RunError(
            f"{validation.predictions}: {len(val_true)} validation predictions; fitting a temperature needs "
            f"at least {MIN_CALIBRATION_IMAGES}, so the run keeps its own"
        )
    factor = fit_temperature(val_probs, val_true)
    old = float(summary.get("temperature", 1.0))
    new = old * factor
    for files in saved_evaluations(model_dir):
        if files.predictions.is_file():
            _rescale(files, class_names, factor, new)
    write_json(model_dir / SUMMARY, {**summary, "temperature": new})
    return old, new


def _rescale(files: EvaluationFiles, class_names: list[str], factor: float, temperature: float) -> None:
    """Apply ``factor`` to one saved evaluation's probabilities and recompute its metrics."""
    rows = read_csv(files.predictions)
    y_true, probs = prediction_arrays(rows, class_names)
    probs = apply_temperature(probs, factor)
    names = [r["file"] for r in rows]
    write_csv(
        files.predictions, prediction_rows(names, y_true, probs, class_names, trust=trust_columns(rows))
    )
    saved = read_json(files.metrics) if files.metrics.is_file() else {}
    metrics = {**saved, **compute_metrics(y_true, probs, class_names), "temperature": temperature}
    write_json(files.metrics, metrics)
