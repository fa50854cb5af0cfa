"""The full-integer model of a run, and whether it is the one served.

:func:`quantize_run` writes ``model_int8.tflite`` with the same three outputs as ``model.tflite``
(probabilities, pooled features, last feature map), scores both on the validation split, and records
the result as ``run.json["int8"]``. When the int8 model's validation accuracy is within
:data:`MAX_INT8_DROP` of the float model's, it becomes the served model (``backend="auto"`` loads it),
the run's trust scores are refitted on its features, so the thresholds belong to what answers, and the
saved evaluations (metrics and predictions of validation and test) are scored again by it, so the
report and the mistakes pages show what serving answers. The choice looks at validation only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clothclf.data.features import PhotoProgress
from clothclf.errors import RunError
from clothclf.evaluation.evaluate import evaluate_classifier
from clothclf.modeling.models import load_model, with_trust_outputs
from clothclf.runs import (
    INT8_MODEL,
    KERAS_MODEL,
    SUMMARY,
    read_json,
    record_model_digests,
    training_evaluation,
    write_evaluation,
    write_json,
)
from clothclf.serving.classifier import load_classifier
from clothclf.serving.export import calibration_images, export_tflite_int8
from clothclf.training.callbacks import ProgressHook, StepReporter
from clothclf.training.phases import CONVERTING, EVALUATING, SPLIT_PHOTOS
from clothclf.training.trust import run_dataset, split_outputs, upgrade_run

#: The int8 model is served when its validation accuracy is at most this much below the float model's.
MAX_INT8_DROP = 0.003


def validation_accuracy(
    model_dir: Path, data_dir: str | Path, backend: str, progress: PhotoProgress | None = None
) -> float:
    """Accuracy of ``model_dir``'s ``backend`` model on the validation split of ``data_dir``;
    ``progress(done, total)`` counts the photos."""
    classifier = load_classifier(model_dir, backend=backend, pool_size=1)
    dataset = run_dataset(model_dir, data_dir)
    _, probs, labels = split_outputs(classifier, dataset, "validation", progress)
    return float(np.mean(probs.argmax(axis=1) == labels))


def quantize_run(
    model_dir: str | Path, data_dir: str | Path, overwrite: bool = False, progress: ProgressHook | None = None
) -> dict:
    """Write the run's int8 model (calibrated on ``data_dir``'s training photos), compare it with the float
    model on validation, serve it if it is within :data:`MAX_INT8_DROP`; the ``int8`` record of ``run.json``.
    ``progress`` hears the conversion and the photos scored (and the trust step when the int8 model serves)."""
    model_dir, steps = Path(model_dir), StepReporter(progress)
    source, target = model_dir / KERAS_MODEL, model_dir / INT8_MODEL
    if not source.is_file():
        raise RunError(f"{model_dir}: no {KERAS_MODEL} to quantize")
    if overwrite or not target.is_file():
        model = with_trust_outputs(load_model(str(source)))
        calibration = calibration_images(data_dir, int(model.input_shape[1]))
        export_tflite_int8(model, target, calibration, steps.timed(CONVERTING))
        if (model_dir / SUMMARY).is_file():
            record_model_digests(model_dir)
    photos = SPLIT_PHOTOS["validation"]
    fp32 = validation_accuracy(model_dir, data_dir, "litert", steps.counting(EVALUATING, f"{photos} (float)"))
    int8 = validation_accuracy(
        model_dir, data_dir, "litert-int8", steps.counting(EVALUATING, f"{photos} (int8)")
    )
    record = {"val_accuracy": int8, "fp32_val_accuracy": fp32, "served": fp32 - int8 <= MAX_INT8_DROP}
    summary = read_json(model_dir / SUMMARY)
    write_json(model_dir / SUMMARY, {**summary, "int8": record})
    if record["served"]:
        upgrade_run(model_dir, data_dir, progress=progress)  # trust fitted on the served model's features
        rescore_saved_splits(model_dir, data_dir, steps)
    return record


def rescore_saved_splits(model_dir: Path, data_dir: str | Path, steps: StepReporter) -> None:
    """Score the splits training saved beside the model again with the served model (metrics and
    predictions, trust included; ``steps`` hears the photos counted), and record the served validation
    accuracy and macro-F1 in ``run.json``."""
    classifier = load_classifier(model_dir, pool_size=1)
    dataset = run_dataset(model_dir, data_dir)
    for split in ("validation", "test"):
        if training_evaluation(model_dir, split).metrics.is_file() and len(dataset.split(split)):
            count = steps.counting(EVALUATING, f"{SPLIT_PHOTOS[split]} (served)")
            metrics, rows = evaluate_classifier(
                classifier, dataset.split(split), dataset.root, progress=count
            )
            record = {**metrics, "temperature": classifier.temperature, "backend": classifier.backend}
            write_evaluation(model_dir, split, record, rows)
            if split == "validation":
                summary = read_json(model_dir / SUMMARY)
                served = {"val_accuracy": metrics["accuracy"], "val_macro_f1": metrics["macro_f1"]}
                write_json(model_dir / SUMMARY, {**summary, **served})
