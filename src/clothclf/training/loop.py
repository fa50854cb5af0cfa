"""Two-phase transfer learning: the head on cached features of the frozen base, then fine-tuning.

``train(config)`` writes a complete run folder (see :mod:`clothclf.runs`) and returns a
:class:`TrainResult`. It reports progress through an optional hook and stops after the current batch
when an optional ``threading.Event`` is set. It reads as its steps: build the model
(:func:`clothclf.modeling.models.build_model`), fit the head on cached features, fit the backbone on
images (fine-tuning, or the whole network when it trains from scratch), score the validation split,
save the run.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import platform
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from clothclf import __version__
from clothclf.allocator import release_freed_memory
from clothclf.config import Paths, TrainConfig
from clothclf.data.datasets import Dataset, class_weights, create_dataset, dataset_fingerprint, map_split
from clothclf.data.features import Features, cached_features, extractor_tflite
from clothclf.data.pipeline import build_augmenter, make_dataset, make_file_dataset
from clothclf.data.report import dataset_report
from clothclf.errors import RunError
from clothclf.evaluation.metrics import compute_metrics
from clothclf.evaluation.predictions import prediction_rows
from clothclf.modeling.models import (
    build_model,
    get_backbone_spec,
    load_model,
    save_model,
    unfreeze_top_layers,
)
from clothclf.numerics import apply_temperature, fit_temperature
from clothclf.runs import (
    FEATURES_MODEL,
    HEAD_WEIGHTS,
    KERAS_MODEL,
    LITERT_MODEL,
    PARTIAL_PREFIX,
    atomic_run_dir,
    new_run_name,
    training_evaluation,
    write_evaluation,
    write_run,
)
from clothclf.serving.export import export_head, export_trust_model
from clothclf.serving.runtime import DenseHead, mirror_averaged
from clothclf.training.callbacks import HistoryRecorder, ProgressCallback, ProgressHook, StepReporter
from clothclf.training.distill import teacher_targets
from clothclf.training.distributed import fit_distributed, is_chief, local_copy, make_strategy, weights_digest
from clothclf.training.phases import (
    CONVERTING,
    EVALUATING,
    FEATURES,
    FINE_TUNE,
    HEAD,
    SAVING,
    SPLIT_PHOTOS,
    TEACHER,
    TRAIN,
    TRUST,
)
from clothclf.training.trust import annotate_predictions, features_of, write_trust

log = logging.getLogger(__name__)


class TrainingCancelled(Exception):
    """Raised by :func:`train` when its stop event was set; nothing is saved."""


@dataclass(frozen=True)
class TrainResult:
    """Where the run was saved and its headline numbers.

    ``val_accuracy`` is the saved model's (the best epoch's weights, restored, scored as serving scores
    them); ``best_epoch_val_accuracy`` the highest Keras logged over the epochs. A multi-worker run's
    other workers save nothing: their ``run_dir`` and ``val_accuracy`` are None; ``weights_digest``
    shows that they ended with the chief's weights.
    """

    run_dir: Path | None
    val_accuracy: float | None
    best_epoch_val_accuracy: float
    epochs: int
    seconds: float
    weights_digest: str


@dataclass(frozen=True)
class TrainingRun:
    """What every step of one :func:`train` call shares: the config, the data, the folder being written
    (None on a multi-worker run's workers other than the chief: they write nothing), the history so
    far, and how to report progress and notice a stop request."""

    config: TrainConfig
    paths: Paths
    dataset: Dataset
    fingerprint: str
    work: Path | None
    started: float
    plan: tuple[tuple[str, int], ...]
    progress: ProgressHook | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    verbose: int = 0
    history: list[dict] = field(default_factory=list)
    features: dict[str, Features] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.dataset.class_names)

    @property
    def total_epochs(self) -> int:
        return sum(epochs for _, epochs in self.plan)

    @property
    def head_only(self) -> bool:
        """Whether only the head is trained (on cached features), so the backbone stays as it came."""
        return self.plan == ((HEAD, self.config.epochs),)

    def stopped(self) -> bool:
        """Whether a stop was requested (on a multi-worker run: on any worker)."""
        return self.stop.is_set()

    @property
    def steps(self) -> StepReporter:
        """Reports the steps around the fit phases, with the run's share of epochs done and history."""
        return StepReporter(
            self.progress,
            self.started,
            lambda: (len(self.history) / max(self.total_epochs, 1), tuple(self.history)),
        )

    def cached_features(self, extractor_file: Path, split: str) -> Features:
        """The frozen extractor's features of ``split`` (:func:`~clothclf.data.features.cached_features`),
        read once and kept for the later steps: memory holds each split's features once (5 KB a photo)."""
        if split not in self.features:
            cache = {"cache_dir": self.paths.cache_dir, "fingerprint": self.fingerprint}
            progress = self.steps.counting(FEATURES, SPLIT_PHOTOS[split])
            self.features[split] = cached_features(
                extractor_file, self.dataset, split, **cache, progress=progress
            )
        return self.features[split]

    def sample_weights(self) -> dict[int, float] | None:
        """Per-class loss weights (balanced), or None when the config turns them off."""
        return class_weights(self.dataset.train, self.num_classes) if self.config.class_weights else None

    def teacher_targets(self) -> np.ndarray | None:
        """The training photos' targets with the teacher's answers blended in, or None (one-hot)."""
        if not self.config.teacher:
            return None
        self.steps.announce(TEACHER)
        config, dataset = self.config, self.dataset
        return teacher_targets(config.teacher, dataset.train, dataset.class_names, config.teacher_weight)


#: Images the whole model runs on at a time when scoring (a MobileNetV2's activations at 224 px take
#: about 10 MB an image while it runs).
PREDICT_BATCH = 16


def predict_arrays(model: keras.Model, images: np.ndarray, tta: bool) -> np.ndarray:
    """Class probabilities of a chunk of ``uint8`` images; with ``tta`` averaged with their horizontal mirror."""
    x = images.astype(np.float32)
    predict = functools.partial(model.predict, batch_size=PREDICT_BATCH, verbose=0)
    probs = predict(x)
    return mirror_averaged(probs, predict, x) if tta else probs


def make_optimizer(config: TrainConfig, learning_rate) -> keras.optimizers.Optimizer:
    """Adam or AdamW (decoupled weight decay) as ``config`` says, keeping a weight EMA if asked."""
    ema = dict(use_ema=config.ema_momentum > 0, ema_momentum=config.ema_momentum or 0.99)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay, **ema)
    return keras.optimizers.Adam(learning_rate, **ema)


def _compile(model: keras.Model, config: TrainConfig, rate) -> None:
    model.compile(
        optimizer=make_optimizer(config, rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )


def learning_rate(config: TrainConfig, base_lr: float, epochs: int, steps: int):
    """A constant rate (for plateau reduction) or a cosine decay after an optional linear warm-up."""
    if config.lr_schedule != "cosine":
        return base_lr
    warmup = min(config.warmup_epochs, max(epochs - 1, 0)) * steps
    if not warmup:
        return keras.optimizers.schedules.CosineDecay(base_lr, decay_steps=max(epochs * steps, 1))
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=(epochs * steps) - warmup, warmup_target=base_lr, warmup_steps=warmup
    )


def _callbacks(run: TrainingRun, phase: str) -> list[keras.callbacks.Callback]:
    """The callbacks of one phase: history, early stopping, best checkpoint, LR plateau, TensorBoard, progress."""
    config = run.config
    # First, so validation, the history, checkpoints and early stopping all see the averaged weights.
    ema = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.ema_momentum else []
    callbacks: list[keras.callbacks.Callback] = [
        *ema,
        HistoryRecorder(run.history, phase),
        keras.callbacks.EarlyStopping(
            monitor="val_accuracy", mode="max", patience=config.patience, restore_best_weights=True
        ),
    ]
    if run.work is not None:
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                str(run.work / f"best-{phase}.weights.h5"),
                monitor="val_accuracy",
                mode="max",
                save_best_only=True,
                save_weights_only=True,
            )
        )
    if config.lr_schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.3, patience=max(config.patience // 2, 1), min_lr=1e-6
            )
        )
    if config.tensorboard and run.work is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run.work / "tensorboard")))
    callbacks.append(
        _progress_callback(run, phase)
    )  # last: sees the history row of the epoch that just ended
    return callbacks


def _progress_callback(run: TrainingRun, phase: str) -> ProgressCallback:
    """The callback that reports a phase's progress to ``run.progress`` and stops it when asked."""
    return ProgressCallback(
        run.progress,
        run.stop,
        phase=phase,
        history=run.history,
        epochs_before=len(run.history),
        total_epochs=run.total_epochs,
        started=run.started,
    )


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


def _plan(config: TrainConfig) -> tuple[tuple[str, int], ...]:
    """The phases and their epochs. Without pretrained weights the whole network trains from scratch
    (a head on random features learns next to nothing), unless a head-only run is asked for."""
    if config.init_from:
        return ((FINE_TUNE, config.fine_tune_epochs),)
    if not get_backbone_spec(config.backbone).pretrained or (config.weights is None and not config.head_only):
        return ((TRAIN, config.epochs),)
    plan = [(HEAD, config.epochs)]
    if not config.head_only and config.fine_tune_layers > 0:
        plan.append((FINE_TUNE, config.fine_tune_epochs))
    return tuple(plan)


def train(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    paths: Paths | None = None,
    progress: ProgressHook | None = None,
    stop: threading.Event | None = None,
    verbose: int = 0,
) -> TrainResult:
    """Train a model as ``config`` says and save a complete run folder (atomically).

    With ``strategy="multi-worker"`` every worker in ``TF_CONFIG`` runs this with the same arguments;
    they train in step, and only the chief evaluates and writes the run folder.
    """
    started = time.monotonic()
    config.validate()
    paths = paths or Paths.from_env()
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy)
    dataset = create_dataset(
        config.data_dir, config.seed, config.val_fraction, config.test_fraction, config.overlay or None
    )
    dataset_report(dataset, paths.cache_dir).raise_if_refused()
    fingerprint = dataset_fingerprint(dataset)
    out_dir = Path(out_dir) if out_dir else paths.runs_dir / new_run_name(config.backbone)
    shared = (config, paths, dataset, fingerprint)
    options = dict(progress=progress, stop=stop or threading.Event(), verbose=verbose)
    if not is_chief(strategy):
        run = TrainingRun(*shared, None, started, _plan(config), **options)
        model, _ = fit_phases(run, strategy)
        best, seconds = _best_val_accuracy(run.history), time.monotonic() - started
        return TrainResult(None, None, best, len(run.history), seconds, weights_digest(model))
    try:
        with atomic_run_dir(out_dir) as work:
            run = TrainingRun(*shared, work, started, _plan(config), **options)
            metrics, digest = _train_and_save(run, strategy)
    except OSError as exc:
        raise RunError(f"could not write the run to {out_dir}: {exc}") from exc
    best, seconds = _best_val_accuracy(run.history), time.monotonic() - started
    return TrainResult(out_dir, metrics["accuracy"], best, len(run.history), seconds, digest)


def _train_and_save(run: TrainingRun, strategy: tf.distribute.Strategy) -> tuple[dict, str]:
    """The steps of :func:`train` inside its run folder; returns the saved validation metrics and the
    digest of the saved weights."""
    model, extractor_file = fit_phases(run, strategy)
    if run.config.strategy == "multi-worker":
        model = local_copy(model)  # the other workers are gone: predict and save without collectives
    return evaluate_and_save(run, model, extractor_file)


def evaluate_and_save(run: TrainingRun, model: keras.Model, extractor_file: Path | None) -> tuple[dict, str]:
    """Steps 4-6 for a trained ``model``: score validation (and test), save the run folder, fit the trust
    scores; returns the saved validation metrics and the digest of the saved weights."""
    run.steps.announce(EVALUATING)
    validation = score(run, model, "validation", extractor_file)
    test = score(run, model, "test", extractor_file) if len(run.dataset.test) else None
    metrics = save(run, model, validation, test, features_model=extractor_file if run.head_only else None)
    calibrated = apply_temperature(validation.probs, metrics["temperature"])
    fit_trust_scores(run, validation.labels, calibrated, extractor_file)
    return metrics, weights_digest(model)


def fit_phases(run: TrainingRun, strategy: tf.distribute.Strategy) -> tuple[keras.Model, Path | None]:
    """Steps 1-3: build, then train each phase of the plan; (model, the extractor's LiteRT model)."""
    model = build(run, strategy)
    extractor_file: Path | None = None
    for phase, epochs in run.plan:
        if run.stopped():
            break
        if phase == HEAD:
            extractor_file = fit_head(run, model, strategy, epochs)
        else:
            fit_backbone(run, model, strategy, phase, epochs)
        for checkpoint in run.work.glob("best-*.weights.h5") if run.work else ():
            checkpoint.unlink()
    if run.stopped():
        raise TrainingCancelled("training was cancelled")
    return model, extractor_file


def build(run: TrainingRun, strategy: tf.distribute.Strategy) -> keras.Model:
    """Step 1: the model (:func:`~clothclf.modeling.models.build_model`), built under ``strategy``."""
    config = run.config
    weights = config.weights if get_backbone_spec(config.backbone).pretrained else None
    with strategy.scope():
        model = build_model(
            config.backbone, run.num_classes, config.image_size, weights, config.dropout, config.hidden_units
        )
        if config.init_from:
            load_weights_of_run(model, Path(config.init_from))
    return model


def load_weights_of_run(model: keras.Model, run_dir: Path) -> None:
    """Set ``model``'s weights to those of the run's ``model.keras`` (any image size, same layers)."""
    source = run_dir / KERAS_MODEL
    if not source.is_file():
        raise RunError(f"{run_dir} has no {KERAS_MODEL} to start from")
    weights = load_model(str(source)).get_weights()
    if [w.shape for w in model.get_weights()] != [w.shape for w in weights]:
        raise RunError(f"{run_dir}: its model has other layers than this configuration builds")
    model.set_weights(weights)


def fit_head(run: TrainingRun, model: keras.Model, strategy: tf.distribute.Strategy, epochs: int) -> Path:
    """Step 2: train the head on cached features of the frozen backbone; returns the extractor's LiteRT
    model (head-only runs ship it, and score and fit trust on its features)."""
    config, head = run.config, model.get_layer("head")
    callbacks = _callbacks(run, HEAD)
    run.steps.announce(FEATURES)
    extractor_file = extractor_tflite(
        model.get_layer("feature_extractor"),
        config.backbone,
        run.paths.cache_dir,
        run.steps.timed(CONVERTING),
    )
    train_f, val_f = (run.cached_features(extractor_file, s) for s in ("train", "validation"))
    steps = int(np.ceil(len(train_f.labels) / config.batch_size))
    with strategy.scope():
        _compile(head, config, learning_rate(config, config.lr, epochs, steps))
    _fit(run, head, strategy, *_feature_datasets(run, train_f, val_f), epochs, callbacks)
    return extractor_file


def _feature_datasets(run: TrainingRun, train: Features, val: Features) -> tuple[tf.data.Dataset, ...]:
    """The training and validation features as batched datasets, taken from the arrays in place."""
    config = run.config
    train_ds = make_dataset(
        train.features,
        train.labels,
        run.num_classes,
        config.batch_size,
        shuffle=True,
        sample_weights=run.sample_weights(),
        seed=config.seed,
    )
    return train_ds, make_dataset(val.features, val.labels, run.num_classes, config.batch_size)


def fit_backbone(
    run: TrainingRun, model: keras.Model, strategy: tf.distribute.Strategy, phase: str, epochs: int
) -> None:
    """Step 3: train on augmented images: the top backbone layers (``fine_tune``) or all (``train``)."""
    config = run.config
    callbacks = _callbacks(run, phase)
    base_lr = config.lr if phase == TRAIN else config.fine_tune_lr
    with strategy.scope():
        if phase == FINE_TUNE:
            unfreeze_top_layers(model, config.fine_tune_layers)
        steps = int(np.ceil(len(run.dataset.train) / config.batch_size))
        _compile(model, config, learning_rate(config, base_lr, epochs, steps))
    train_ds = make_file_dataset(
        run.dataset.train,
        config.image_size,
        run.num_classes,
        config.batch_size,
        shuffle=True,
        augmenter=build_augmenter(
            config.augment, config.seed, config.quarter_turns, config.zoom_in, config.blur
        ),
        mixup=config.mixup if config.augment.enabled else 0.0,
        sample_weights=run.sample_weights(),
        targets=run.teacher_targets(),
        seed=config.seed,
    )
    val_ds = make_file_dataset(run.dataset.validation, config.image_size, run.num_classes, config.batch_size)
    _fit(run, model, strategy, train_ds, val_ds, epochs, callbacks)


def _fit(
    run: TrainingRun,
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    epochs: int,
    callbacks: list[keras.callbacks.Callback],
) -> None:
    """``model.fit``, or :func:`~clothclf.training.distributed.fit_distributed` on several workers
    (a stop requested on any of them then counts as requested here too)."""
    if run.config.strategy != "multi-worker":
        # The dataset shuffles itself.
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=epochs,
            shuffle=False,
            callbacks=callbacks,
            verbose=run.verbose,
        )
    elif fit_distributed(model, strategy, train_ds, val_ds, epochs, callbacks, run.verbose):
        run.stop.set()


@dataclass(frozen=True)
class Scores:
    """A model's probabilities for the readable photos of one split."""

    files: tuple[Path, ...]
    labels: np.ndarray
    probs: np.ndarray


def score(run: TrainingRun, model: keras.Model, split: str, extractor_file: Path | None) -> Scores:
    """Step 4: the model's probabilities for ``split`` (validation; and the dataset's test part).

    A head-only run without TTA scores the split's cached features: the same probabilities, much faster.
    Otherwise the split's photos are decoded and scored a chunk at a time.
    """
    if run.head_only and not run.config.tta and extractor_file is not None:
        found = run.cached_features(extractor_file, split)
        files = tuple(run.dataset.root / f for f in found.files)
        return Scores(files, found.labels, model.get_layer("head").predict(found.features, verbose=0))
    tta, progress = run.config.tta, run.steps.counting(EVALUATING, SPLIT_PHOTOS[split])
    scored = map_split(
        run.dataset.split(split),
        run.config.image_size,
        lambda x: predict_arrays(model, x, tta),
        progress=progress,
    )
    return Scores(scored.files, scored.labels, scored.outputs)


def save(
    run: TrainingRun,
    model: keras.Model,
    validation: Scores,
    test: Scores | None = None,
    features_model: Path | None = None,
) -> dict:
    """Step 5: write the run folder, given the model's validation probabilities; return their metrics.

    ``test``, the scores of the dataset's own test part, is saved as that split's metrics and predictions
    (with the same temperature): reported, never used for a choice.

    A temperature is fitted on those probabilities (:mod:`clothclf.numerics`), recorded in
    ``run.json`` and applied to the saved validation predictions, as serving applies it.

    The LiteRT model is ``model.tflite``, converted here (about 15 s), unless ``features_model`` is
    given: a head-only run ships its frozen extractor's cached LiteRT model as ``features.tflite`` and
    its head as ``head.npz`` (see :class:`clothclf.serving.runtime.DenseHead`), and converts nothing.
    """
    temperature = fit_temperature(validation.probs, validation.labels)
    metrics, rows = _evaluation(run, validation, temperature)
    if test is not None and len(test.labels):
        write_evaluation(run.work, "test", *_evaluation(run, test, temperature))
    _write_model_files(run, model, features_model)
    seconds = round(time.monotonic() - run.started, 1)
    write_run(
        run.work,
        class_names=run.dataset.class_names,
        history=run.history,
        metrics=metrics,
        predictions=rows,
        config=_config_record(run, seconds),
        summary=_summary(run, metrics, seconds),
        split_record=run.dataset.split_record() if run.dataset.layout != "splits" else None,
    )
    return metrics


def _write_model_files(run: TrainingRun, model: keras.Model, features_model: Path | None) -> None:
    """The Keras model, the LiteRT model (or a head-only run's extractor) and the NumPy head, counted
    as 3 model files; the LiteRT conversion, the long one, reports its own progress in between."""
    work, progress = run.work, run.steps.counting(SAVING, "model files")
    progress(0, 3)
    save_model(model, work / KERAS_MODEL)
    progress(1, 3)
    if features_model is None:
        export_trust_model(model, work / LITERT_MODEL, run.steps.timed(CONVERTING))
    else:
        shutil.copyfile(features_model, work / FEATURES_MODEL)
    progress(2, 3)
    export_head(model.get_layer("head"), work / HEAD_WEIGHTS)
    progress(3, 3)
    release_freed_memory()  # the serializer's and converter's buffers, not kept through the trust step


def fit_trust_scores(
    run: TrainingRun, labels: np.ndarray, probs: np.ndarray, extractor_file: Path | None
) -> None:
    """Step 6: the feature bank of the training photos and the thresholds, fitted on validation
    (:mod:`clothclf.training.trust`); ``probs`` are the calibrated validation probabilities."""
    run.steps.announce(TRUST)
    scored = [s for s in ("validation", "test") if training_evaluation(run.work, s).predictions.is_file()]
    if run.head_only and extractor_file is not None:  # the cached features are the served ones
        features = {s: run.cached_features(extractor_file, s).features for s in ("train", *scored)}
    else:
        model_file, size = run.work / LITERT_MODEL, run.config.image_size
        count = {s: run.steps.counting(TRUST, SPLIT_PHOTOS[s]) for s in ("train", *scored)}
        features = {s: features_of(model_file, run.dataset.split(s), size, count[s]) for s in count}
    logits = DenseHead(run.work / HEAD_WEIGHTS).logits
    train, val = features.pop("train"), features["validation"]
    write_trust(
        run.work, logits, train, val, probs, labels, run.config.accept_accuracy, run.steps.timed(TRUST)
    )
    annotate_predictions(run.work, features)  # the saved answers get the status serving gives them


def _evaluation(run: TrainingRun, scores: Scores, temperature: float) -> tuple[dict, list[dict]]:
    """Metrics and prediction rows of ``scores`` with ``temperature`` applied, as serving applies it."""
    class_names = run.dataset.class_names
    probs = apply_temperature(scores.probs, temperature)
    metrics = {**compute_metrics(scores.labels, probs, class_names), "temperature": temperature}
    return metrics, prediction_rows(scores.files, scores.labels, probs, class_names, root=run.dataset.root)


def _best_val_accuracy(history: list[dict]) -> float:
    return max((float(r.get("val_accuracy", 0.0)) for r in history), default=0.0)


def _config_record(run: TrainingRun, seconds: float) -> dict:
    """What ``config.json`` records: every hyperparameter, the dataset, the seed, the library versions.

    A run on the default dataset records no folder (``data_dir`` empty, ``root`` None): wherever the run
    is opened, that machine's default dataset (``CLOTHCLF_DATA_DIR``) is where its images are. Other
    folders are recorded absolute, so the run's photos are found from any working directory.
    """
    dataset = run.dataset
    on_default = Path(dataset.root).resolve() == run.paths.default_dataset_dir.resolve()
    data_dir = "" if on_default else str(Path(run.config.data_dir).resolve())
    return {
        "train": {**run.config.to_dict(), "data_dir": data_dir},
        "dataset": {
            "root": None if on_default else str(Path(dataset.root).resolve()),
            "layout": dataset.layout,
            "fingerprint": run.fingerprint,
            "class_names": list(dataset.class_names),
            "sizes": {s: len(dataset.split(s)) for s in ("train", "validation", "test")},
        },
        "seed": run.config.seed,
        "epochs_run": len(run.history),
        "seconds": seconds,
        "versions": _versions(),
    }


def _summary(run: TrainingRun, metrics: dict, seconds: float) -> dict:
    """What ``run.json`` records: the run's name, status and headline numbers."""
    config = run.config
    return {
        "name": run.work.name.removeprefix(PARTIAL_PREFIX),
        "status": "complete",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "backbone": config.backbone,
        "image_size": config.image_size,
        "head_only": config.head_only,
        "tta": config.tta,
        "temperature": metrics["temperature"],
        "num_classes": run.num_classes,
        "epochs": len(run.history),
        "seconds": seconds,
        "val_accuracy": metrics["accuracy"],
        "val_macro_f1": metrics["macro_f1"],
        "best_val_accuracy": _best_val_accuracy(run.history),
        "overlay_digest": run.dataset.overlay_digest,
    }
