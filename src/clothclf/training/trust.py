"""Give a run folder trust scores: feature and feature-map outputs, a feature bank and fitted thresholds.

New runs get them when they are saved (:func:`write_trust`); :func:`upgrade_run` (``clothclf trust``)
adds them to a run saved before: it re-exports the LiteRT model with the pooled features and the last
feature map as outputs (needs ``model.keras``), writes the head as ``head.npz``, runs the model over
the training and validation photos, and fits (:func:`clothclf.serving.trust.fit_trust`). The test
split is never looked at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clothclf.data.datasets import Dataset, Split, create_dataset, map_split
from clothclf.data.features import PhotoProgress
from clothclf.errors import RunError
from clothclf.evaluation.predictions import prediction_arrays, prediction_rows
from clothclf.modeling.models import load_model, with_feature_map
from clothclf.runs import (
    CONFIG,
    FEATURES_MODEL,
    HEAD_WEIGHTS,
    KERAS_MODEL,
    LITERT_MODEL,
    SUMMARY,
    TRUST_FILE,
    read_class_names,
    read_csv,
    read_json,
    record_model_digests,
    training_evaluation,
    verify_model_files,
    write_csv,
    write_json,
)
from clothclf.serving.classifier import Classifier, load_classifier, load_trust
from clothclf.serving.export import TimedProgress, export_head, export_tflite, export_trust_model, timed_step
from clothclf.serving.runtime import LiteRTRunner, available_cpus
from clothclf.serving.trust import DEFAULT_ACCEPT_ACCURACY, fit_trust
from clothclf.training.callbacks import ProgressHook, StepReporter
from clothclf.training.phases import CONVERTING, SPLIT_PHOTOS, TRUST

#: Seconds fitting the trust scores takes for 1280-wide features (EfficientNet-Lite2, MobileNetV2):
#: 0.8-4.5 s on the shared 2-core CPU, nearly all of it two eigendecompositions, cubic in the width.
FIT_SECONDS_1280 = 2.5


def fit_estimate(train_features: np.ndarray) -> float:
    """Seconds :func:`write_trust` is expected to take on features as wide as ``train_features``."""
    return FIT_SECONDS_1280 * (train_features.shape[1] / 1280) ** 3


def _outputs_missing(path: Path, names: tuple[str, ...]) -> bool:
    return not set(names) <= LiteRTRunner(path, num_threads=1, pool_size=1).outputs


def add_trust_outputs(model_dir: Path, steps: StepReporter | None = None) -> list[str]:
    """Re-export what lacks the feature outputs, and write ``head.npz``; the names of the files written.
    ``steps`` hears how each conversion goes."""
    keras_file = model_dir / KERAS_MODEL
    tflite, features_file, head_file = (model_dir / n for n in (LITERT_MODEL, FEATURES_MODEL, HEAD_WEIGHTS))
    stale = (tflite.is_file() and _outputs_missing(tflite, ("features", "feature_map"))) or (
        features_file.is_file() and _outputs_missing(features_file, ("feature_map",))
    )
    if not (stale or not head_file.is_file()):
        return []
    if not keras_file.is_file():
        raise RunError(f"{model_dir}: no {KERAS_MODEL} to add feature outputs from")
    verify_model_files(model_dir, [KERAS_MODEL])
    model = load_model(str(keras_file))
    written, progress = [], steps.timed(CONVERTING) if steps else None
    if tflite.is_file() and stale:
        export_trust_model(model, tflite, progress)
        written.append(tflite.name)
    if features_file.is_file() and stale:
        export_tflite(with_feature_map(model.get_layer("feature_extractor")), features_file, progress)
        written.append(features_file.name)
    if not head_file.is_file():
        export_head(model.get_layer("head"), head_file)
        written.append(head_file.name)
    return written


def split_outputs(
    classifier: Classifier, dataset: Dataset, split: str, progress: PhotoProgress | None = None
) -> tuple[np.ndarray, ...]:
    """(pooled features, calibrated probabilities, labels) of a split's readable photos, decoded and
    run a chunk at a time; ``progress(done, total)`` counts the photos."""

    def features_and_probs(images: np.ndarray) -> np.ndarray:
        outputs = classifier.outputs(images)
        if outputs.features is None:
            raise RunError(f"{classifier.model_dir}: the model has no features output")
        return np.concatenate([outputs.features, outputs.probabilities], axis=1)

    computed = map_split(dataset.split(split), classifier.image_size, features_and_probs, progress=progress)
    width = len(classifier.class_names)
    return computed.outputs[:, :-width], computed.outputs[:, -width:], computed.labels


def write_trust(
    model_dir: Path,
    head_logits,
    train_features: np.ndarray,
    val_features: np.ndarray,
    val_probs: np.ndarray,
    val_labels: np.ndarray,
    accept_accuracy: float,
    progress: TimedProgress | None = None,
) -> dict:
    """Fit on validation, write ``trust.npz`` and the ``trust`` record into ``run.json``; the record.
    ``progress`` hears how the fitting goes (against :func:`fit_estimate`)."""
    with timed_step(fit_estimate(train_features), progress):
        bank, record = fit_trust(
            train_features,
            val_features,
            head_logits(val_features),
            val_probs.max(axis=1),
            val_probs.argmax(axis=1) == np.asarray(val_labels),
            accept_accuracy=accept_accuracy,
        )
    bank.save(model_dir / TRUST_FILE)
    summary = read_json(model_dir / SUMMARY)
    write_json(model_dir / SUMMARY, {**summary, "trust": record})
    return record


def annotate_predictions(model_dir: Path, features: dict[str, np.ndarray]) -> None:
    """Give the predictions training saved for each split (``predictions_<split>.csv``) each photo's
    ``status`` and ``ood_score`` under the run's fitted trust, as serving would answer;
    ``features[split]`` holds the photos' pooled features in the order of the saved rows."""
    trust = load_trust(model_dir, read_json(model_dir / SUMMARY))
    if not trust.scored:
        return
    class_names = read_class_names(model_dir)
    for split, split_features in features.items():
        saved = training_evaluation(model_dir, split).predictions
        rows = read_csv(saved)
        if len(rows) != len(split_features):
            raise RunError(f"{saved}: {len(rows)} predictions but features of {len(split_features)} photos")
        scores = trust.bank.ood_scores(split_features, trust.head.logits(split_features))
        statuses = [
            (trust.thresholds.status(float(row["confidence"]), float(score)), float(score))
            for row, score in zip(rows, scores)
        ]
        y_true, probs = prediction_arrays(rows, class_names)
        files = [row["file"] for row in rows]
        write_csv(saved, prediction_rows(files, y_true, probs, class_names, trust=statuses))


def _train_options(model_dir: Path) -> dict:
    config_file = model_dir / CONFIG
    return read_json(config_file).get("train", {}) if config_file.is_file() else {}


def run_dataset(model_dir: str | Path, data_dir: str | Path) -> Dataset:
    """``data_dir`` split as the run in ``model_dir`` split it (its seed and fractions)."""
    train_options = _train_options(Path(model_dir))
    return create_dataset(
        data_dir,
        int(train_options.get("seed", 42)),
        float(train_options.get("val_fraction", 0.1)),
        float(train_options.get("test_fraction", 0.1)),
    )


def upgrade_run(
    model_dir: str | Path,
    data_dir: str | Path,
    accept_accuracy: float | None = None,
    progress: ProgressHook | None = None,
) -> dict:
    """Add trust scores to a saved run (see the module docstring); the ``trust`` record of ``run.json``.
    ``progress`` hears each step: conversions, the photos counted, the fitting."""
    model_dir = Path(model_dir)
    if not (model_dir / SUMMARY).is_file():
        raise RunError(f"{model_dir}: not a run folder (no {SUMMARY})")
    train_options = _train_options(model_dir)
    accept_accuracy = accept_accuracy or float(train_options.get("accept_accuracy", DEFAULT_ACCEPT_ACCURACY))
    dataset, steps = run_dataset(model_dir, data_dir), StepReporter(progress)
    if add_trust_outputs(model_dir, steps):
        record_model_digests(model_dir)  # the re-exported files are checked on load like the others
    classifier = load_classifier(model_dir, backend="auto", pool_size=1)  # the served model
    if classifier.backend == "keras":
        raise RunError(f"{model_dir}: no LiteRT model to fit trust scores on")
    if tuple(dataset.class_names) != classifier.class_names:
        raise RunError(
            f"{data_dir}: classes {dataset.class_names} differ from the model's {classifier.class_names}"
        )
    train_features, _, _ = split_outputs(
        classifier, dataset, "train", steps.counting(TRUST, SPLIT_PHOTOS["train"])
    )
    val_features, val_probs, val_labels = split_outputs(
        classifier, dataset, "validation", steps.counting(TRUST, SPLIT_PHOTOS["validation"])
    )
    return write_trust(
        model_dir,
        classifier.trust.head.logits,
        train_features,
        val_features,
        val_probs,
        val_labels,
        accept_accuracy,
        steps.timed(TRUST),
    )


def features_of(
    model_file: Path, split: Split, image_size: int, progress: PhotoProgress | None = None
) -> np.ndarray:
    """Pooled backbone features of a split's readable photos by a LiteRT model with a ``features``
    output, decoded and run a chunk at a time (:func:`~clothclf.data.datasets.map_split`);
    ``progress(done, total)`` counts the photos."""
    runner = LiteRTRunner(model_file, num_threads=available_cpus(), pool_size=1)

    def features(images: np.ndarray) -> np.ndarray:
        return runner.arrays(images.astype(np.float32), ("features",))["features"]

    computed = map_split(split, image_size, features, progress=progress)
    return computed.outputs if computed.files else np.zeros((0, 0), np.float32)
