"""Evaluate a classifier on a split, and recalibrate a saved run from its validation predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clothclf.data.datasets import Split, decode_split
from clothclf.errors import DatasetError, RunError
from clothclf.evaluation.metrics import compute_metrics
from clothclf.evaluation.predictions import prediction_arrays, prediction_rows, trust_columns
from clothclf.runs import read_csv, read_json, write_csv, write_json
from clothclf.training.calibration import apply_temperature, fit_temperature


def evaluate_classifier(
    classifier, split: Split, root: str | Path, batch_size: int = 32
) -> tuple[dict, list[dict]]:
    """Run ``classifier`` (see :mod:`clothclf.serving.classifier`) over ``split``; return (metrics, per-image rows).

    Files that cannot be decoded are skipped (one warning) and listed under ``metrics["skipped"]``.
    """
    decoded = decode_split(split, classifier.image_size)
    if not len(decoded.labels):
        raise DatasetError("no readable images to evaluate")
    answers = [
        answer
        for i in range(0, len(decoded.images), batch_size)
        for answer in classifier.answers(decoded.images[i : i + batch_size], top_k=1)
    ]
    names = classifier.class_names
    probs = np.asarray([[a.probabilities[name] for name in names] for a in answers])
    metrics = compute_metrics(decoded.labels, probs, names)
    metrics["skipped"] = list(decoded.skipped)
    trust = [(a.status, a.ood_score) for a in answers] if classifier.trust.scored else None
    return metrics, prediction_rows(decoded.files, decoded.labels, probs, names, root=root, trust=trust)


def recalibrate_run(model_dir: str | Path) -> tuple[float, float]:
    """Fit a run's temperature again on its saved validation predictions and rescale every saved split.

    For runs saved before calibration existed: the probabilities in ``predictions_*.csv`` are
    rescaled and their ``metrics_*.json`` recomputed (the answers, and so accuracy, do not change), and
    ``run.json`` records the new temperature. Returns (old, new) temperature.
    """
    model_dir = Path(model_dir)
    validation = model_dir / "predictions_validation.csv"
    if not validation.is_file() or not (model_dir / "run.json").is_file():
        raise RunError(f"{model_dir}: needs run.json and predictions_validation.csv to calibrate")
    class_names = read_json(model_dir / "class_names.json")
    summary = read_json(model_dir / "run.json")
    val_true, val_probs = prediction_arrays(read_csv(validation), class_names)
    factor = fit_temperature(val_probs, val_true)
    old = float(summary.get("temperature", 1.0))
    new = old * factor
    for predictions in sorted(model_dir.glob("predictions_*.csv")):
        rows = read_csv(predictions)
        y_true, probs = prediction_arrays(rows, class_names)
        probs = apply_temperature(probs, factor)
        files = [r["file"] for r in rows]
        write_csv(predictions, prediction_rows(files, y_true, probs, class_names, trust=trust_columns(rows)))
        metrics_file = model_dir / f"metrics_{predictions.stem.removeprefix('predictions_')}.json"
        saved = read_json(metrics_file) if metrics_file.is_file() else {}
        write_json(metrics_file, {**saved, **compute_metrics(y_true, probs, class_names), "temperature": new})
    write_json(model_dir / "run.json", {**summary, "temperature": new})
    return old, new
