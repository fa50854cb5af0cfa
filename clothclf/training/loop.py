"""Two-phase transfer learning: the head on cached features of the frozen base, then fine-tuning.

``train(config)`` writes a complete run folder (see :mod:`clothclf.runs`) and returns a
:class:`TrainResult`. It reports progress through an optional hook and stops after the current batch
when an optional ``threading.Event`` is set.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from clothclf import __version__
from clothclf.config import Paths, TrainConfig
from clothclf.data.datasets import (
    Dataset,
    DecodedSplit,
    class_weights,
    create_dataset,
    dataset_fingerprint,
    decode_split,
)
from clothclf.data.features import cached_features, extractor_tflite
from clothclf.data.pipeline import build_augmenter, make_dataset
from clothclf.errors import RunError
from clothclf.evaluation.metrics import compute_metrics
from clothclf.evaluation.predictions import prediction_rows
from clothclf.modeling.models import (
    build_feature_extractor,
    build_head,
    get_backbone_spec,
    unfreeze_top_layers,
)
from clothclf.runs import atomic_run_dir, new_run_name, write_csv, write_json
from clothclf.serving.export import export_head, export_tflite
from clothclf.training.calibration import apply_temperature, fit_temperature
from clothclf.training.callbacks import HistoryRecorder, ProgressCallback, ProgressEvent, ProgressHook
from clothclf.training.distributed import make_strategy

log = logging.getLogger(__name__)


class TrainingCancelled(Exception):
    """Raised by :func:`train` when its stop event was set; nothing is saved."""


@dataclass(frozen=True)
class TrainResult:
    """Where the run was saved and its headline numbers."""

    run_dir: Path
    val_accuracy: float
    best_val_accuracy: float
    epochs: int
    seconds: float


def predict_arrays(model: keras.Model, images: np.ndarray, tta: bool, batch_size: int = 64) -> np.ndarray:
    """Class probabilities of ``uint8`` images; with ``tta`` averaged with their horizontal mirror."""
    x = images.astype(np.float32)
    probs = model.predict(x, batch_size=batch_size, verbose=0)
    if tta:
        probs = (probs + model.predict(x[:, :, ::-1], batch_size=batch_size, verbose=0)) / 2.0
    return probs


def _compile(model: keras.Model, optimizer_lr, label_smoothing: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(optimizer_lr),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )


def _learning_rate(config: TrainConfig, base_lr: float, epochs: int, steps: int):
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(base_lr, decay_steps=max(epochs * steps, 1))
    return base_lr


def _callbacks(
    config: TrainConfig, phase: str, history: list[dict], progress: ProgressCallback, work: Path
) -> list[keras.callbacks.Callback]:
    callbacks: list[keras.callbacks.Callback] = [
        HistoryRecorder(history, phase),
        keras.callbacks.EarlyStopping(
            monitor="val_accuracy", mode="max", patience=config.patience, restore_best_weights=True
        ),
        keras.callbacks.ModelCheckpoint(
            str(work / f"best-{phase}.weights.h5"),
            monitor="val_accuracy",
            mode="max",
            save_best_only=True,
            save_weights_only=True,
        ),
    ]
    if config.lr_schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.3, patience=max(config.patience // 2, 1), min_lr=1e-6
            )
        )
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(work / "tensorboard")))
    callbacks.append(progress)  # last: sees the history row of the epoch that just ended
    return callbacks


def _versions() -> dict[str, str]:
    import PIL
    import sklearn

    return {
        "clothclf": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "scikit-learn": sklearn.__version__,
    }


def _plan(config: TrainConfig) -> list[tuple[str, int]]:
    if not get_backbone_spec(config.backbone).pretrained:
        return [("train", config.epochs)]
    plan = [("head", config.epochs)]
    if not config.head_only and config.fine_tune_layers > 0:
        plan.append(("fine_tune", config.fine_tune_epochs))
    return plan


def train(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    paths: Paths | None = None,
    progress: ProgressHook | None = None,
    stop: threading.Event | None = None,
    verbose: int = 0,
) -> TrainResult:
    """Train a model as ``config`` says and save a complete run folder (atomically)."""
    started = time.monotonic()
    config.validate()
    paths = paths or Paths.from_env()
    spec = get_backbone_spec(config.backbone)
    weights = config.weights if spec.pretrained else None
    keras.utils.set_random_seed(config.seed)
    dataset = create_dataset(config.data_dir, config.seed, config.val_fraction, config.test_fraction)
    fingerprint = dataset_fingerprint(dataset)
    num_classes = len(dataset.class_names)
    out_dir = Path(out_dir) if out_dir else paths.runs_dir / new_run_name(config.backbone)
    plan = _plan(config)
    total_epochs = sum(epochs for _, epochs in plan)
    history: list[dict] = []
    sample_weights = class_weights(dataset.train, num_classes) if config.class_weights else None

    def announce(phase: str) -> None:
        if progress is not None:
            done = len(history) / max(total_epochs, 1)
            progress(ProgressEvent(phase, 0, 0, 0, 0, done, time.monotonic() - started, {}, tuple(history)))

    try:
        with atomic_run_dir(out_dir) as work:
            strategy = make_strategy(config.strategy)
            with strategy.scope():
                extractor = build_feature_extractor(config.backbone, config.image_size, weights)
                head = build_head(
                    extractor.output_shape[-1], num_classes, config.dropout, config.hidden_units
                )
                pixels = keras.Input((config.image_size, config.image_size, 3), name="pixels")
                model = keras.Model(pixels, head(extractor(pixels)), name=f"clothclf_{config.backbone}")

            decoded: dict[str, DecodedSplit] = {}

            def images_of(split: str):
                if split not in decoded:
                    decoded[split] = decode_split(dataset.split(split), config.image_size)
                return decoded[split]

            for phase, epochs in plan:
                if stop is not None and stop.is_set():
                    break
                callback = ProgressCallback(
                    progress,
                    stop,
                    phase=phase,
                    history=history,
                    epochs_before=len(history),
                    total_epochs=total_epochs,
                    started=started,
                )
                callbacks = _callbacks(config, phase, history, callback, work)
                if phase == "head":
                    announce("features")
                    extractor_file = extractor_tflite(extractor, config.backbone, paths.cache_dir)
                    cache = dict(cache_dir=paths.cache_dir, fingerprint=fingerprint)
                    train_f = cached_features(extractor_file, dataset, "train", **cache)
                    val_f = cached_features(extractor_file, dataset, "validation", **cache)
                    steps = int(np.ceil(len(train_f.labels) / config.batch_size))
                    with strategy.scope():
                        _compile(
                            head, _learning_rate(config, config.lr, epochs, steps), config.label_smoothing
                        )
                    eye = np.eye(num_classes, dtype=np.float32)
                    head.fit(
                        train_f.features,
                        eye[train_f.labels],
                        sample_weight=(
                            np.asarray([sample_weights[int(y)] for y in train_f.labels], np.float32)
                            if sample_weights
                            else None
                        ),
                        validation_data=(val_f.features, eye[val_f.labels]),
                        batch_size=config.batch_size,
                        epochs=epochs,
                        shuffle=True,
                        callbacks=callbacks,
                        verbose=verbose,
                    )
                else:
                    announce("decoding")
                    train_images, val_images = images_of("train"), images_of("validation")
                    base_lr = config.lr if phase == "train" else config.fine_tune_lr
                    with strategy.scope():
                        if phase == "fine_tune":
                            unfreeze_top_layers(model, config.fine_tune_layers)
                        steps = int(np.ceil(len(train_images.labels) / config.batch_size))
                        _compile(
                            model, _learning_rate(config, base_lr, epochs, steps), config.label_smoothing
                        )
                    train_ds = make_dataset(
                        train_images.images,
                        train_images.labels,
                        num_classes,
                        config.batch_size,
                        shuffle=True,
                        augmenter=build_augmenter(config.augment, config.seed),
                        sample_weights=sample_weights,
                        seed=config.seed,
                    )
                    val_ds = make_dataset(
                        val_images.images, val_images.labels, num_classes, config.batch_size
                    )
                    model.fit(
                        train_ds,
                        validation_data=val_ds,
                        epochs=epochs,
                        shuffle=False,  # the dataset shuffles itself
                        callbacks=callbacks,
                        verbose=verbose,
                    )
                for checkpoint in work.glob("best-*.weights.h5"):
                    checkpoint.unlink()
            if stop is not None and stop.is_set():
                raise TrainingCancelled("training was cancelled")

            announce("evaluating")
            head_only = plan == [("head", config.epochs)]
            if head_only and not config.tta:
                # The cached validation features give the same probabilities, much faster.
                files = tuple(dataset.root / f for f in val_f.files)
                labels, probs = val_f.labels, head.predict(val_f.features, verbose=0)
            else:
                val = images_of("validation")
                files, labels = val.files, val.labels
                probs = predict_arrays(model, val.images, config.tta)
            metrics = save_run(
                work,
                model,
                config,
                dataset,
                fingerprint,
                history,
                files,
                labels,
                probs,
                started,
                features_model=extractor_file if head_only else None,
            )
    except OSError as exc:
        raise RunError(f"could not write the run to {out_dir}: {exc}") from exc
    best = max((float(r.get("val_accuracy", 0.0)) for r in history), default=0.0)
    return TrainResult(out_dir, metrics["accuracy"], best, len(history), time.monotonic() - started)


def save_run(
    work: Path,
    model: keras.Model,
    config: TrainConfig,
    dataset: Dataset,
    fingerprint: str,
    history: list[dict],
    files: Sequence[Path],
    labels: np.ndarray,
    probs: np.ndarray,
    started: float,
    features_model: Path | None = None,
) -> dict:
    """Write every artifact of a trained model's run folder, given its validation probabilities.

    A temperature is fitted on those probabilities (:mod:`clothclf.training.calibration`), recorded in
    ``run.json`` and applied to the saved validation predictions, as serving applies it.

    The LiteRT model is ``model.tflite``, converted here (about 15 s), unless ``features_model`` is
    given: a head-only run ships its frozen extractor's cached LiteRT model as ``features.tflite`` and
    its head as ``head.npz`` (see :class:`clothclf.serving.runtime.DenseHead`), and converts nothing.
    """
    temperature = fit_temperature(probs, labels)
    probs = apply_temperature(probs, temperature)
    metrics = {**compute_metrics(labels, probs, dataset.class_names), "temperature": temperature}
    rows = prediction_rows(files, labels, probs, dataset.class_names, root=dataset.root)
    best = max((float(r.get("val_accuracy", 0.0)) for r in history), default=0.0)
    model.save(work / "model.keras")
    if features_model is None:
        export_tflite(model, work / "model.tflite")
    else:
        shutil.copyfile(features_model, work / "features.tflite")
        export_head(model.get_layer("head"), work / "head.npz")
    _write_run(work, config, dataset, fingerprint, history, metrics, rows, time.monotonic() - started, best)
    return metrics


def _write_run(
    work: Path,
    config: TrainConfig,
    dataset: Dataset,
    fingerprint: str,
    history: list[dict],
    metrics: dict,
    rows: list[dict],
    seconds: float,
    best_val_accuracy: float,
) -> None:
    write_json(work / "class_names.json", list(dataset.class_names))
    write_csv(work / "history.csv", history)
    write_json(work / "metrics_validation.json", metrics)
    write_csv(work / "predictions_validation.csv", rows)
    if dataset.layout == "folder":
        write_json(work / "split.json", dataset.split_record())
    write_json(
        work / "config.json",
        {
            "train": config.to_dict(),
            "dataset": {
                "root": str(dataset.root),
                "layout": dataset.layout,
                "fingerprint": fingerprint,
                "class_names": list(dataset.class_names),
                "sizes": {s: len(dataset.split(s)) for s in ("train", "validation", "test")},
            },
            "seed": config.seed,
            "epochs_run": len(history),
            "seconds": round(seconds, 1),
            "versions": _versions(),
        },
    )
    write_json(
        work / "run.json",
        {
            "name": work.name.removeprefix(".partial-"),
            "status": "complete",
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "backbone": config.backbone,
            "image_size": config.image_size,
            "head_only": config.head_only,
            "tta": config.tta,
            "temperature": metrics["temperature"],
            "num_classes": len(dataset.class_names),
            "epochs": len(history),
            "seconds": round(seconds, 1),
            "val_accuracy": metrics["accuracy"],
            "val_macro_f1": metrics["macro_f1"],
            "best_val_accuracy": best_val_accuracy,
        },
    )
