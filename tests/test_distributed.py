"""The multi-worker training loop: in-process against Model.fit, and two workers on 127.0.0.1."""

from __future__ import annotations

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from clothclf.training.callbacks import HistoryRecorder, ProgressCallback
from clothclf.training.distributed import fit_distributed, make_strategy


def dense_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model


def batches(x, y, w=None, batch_size=8) -> tf.data.Dataset:
    tensors = (x, y) if w is None else (x, y, w)
    return tf.data.Dataset.from_tensor_slices(tensors).batch(batch_size)


def data(n: int = 20):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    w = rng.uniform(0.5, 2.0, n).astype(np.float32)
    return x, y, w


def test_fit_distributed_takes_the_steps_model_fit_takes():
    """Same weights and history as Model.fit: loss over the global batch, sample weights, callbacks."""
    x, y, w = data()
    reference, rows_fit = dense_model(), []
    reference.fit(
        batches(x, y, w),
        validation_data=batches(x, y),
        epochs=2,
        verbose=0,
        callbacks=[HistoryRecorder(rows_fit, "head")],
    )
    model, rows = dense_model(), []
    fit_distributed(
        model, make_strategy("default"), batches(x, y, w), batches(x, y), 2, [HistoryRecorder(rows, "head")]
    )
    for mine, theirs in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert rows[-1][key] == pytest.approx(rows_fit[-1][key], rel=1e-5)


def test_fit_distributed_stops_early_and_on_request():
    x, y, _ = data()
    model, rows = dense_model(), []
    stopper = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=0, baseline=1.01)
    fit_distributed(
        model,
        make_strategy("default"),
        batches(x, y),
        batches(x, y),
        5,
        [HistoryRecorder(rows, "head"), stopper],
    )
    assert len(rows) == 2  # Keras' early stopping never stops after the first epoch
    stop, events, rows = threading.Event(), [], []

    def hook(event):
        events.append(event)
        stop.set()

    progress = ProgressCallback(
        hook, stop, phase="head", history=rows, epochs_before=0, total_epochs=5, started=0.0
    )
    fit_distributed(
        model,
        make_strategy("default"),
        batches(x, y, batch_size=2),
        batches(x, y),
        5,
        [HistoryRecorder(rows, "head"), progress],
    )
    # Asked after the first batch; the request reaches every worker with the next one; then the epoch ends.
    assert len(rows) == 1 and [e.batch for e in events] == [1, 2, 10]
