"""The multi-worker training loop: in-process against Model.fit, and two workers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import PROJECT_ROOT

from clothclf.modeling.models import load_model
from clothclf.runs import is_complete_run, read_json
from clothclf.training.callbacks import HistoryRecorder, ProgressCallback
from clothclf.training.distributed import fit_distributed, make_strategy, weights_digest


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
    requested = fit_distributed(
        model,
        make_strategy("default"),
        batches(x, y),
        batches(x, y),
        5,
        [HistoryRecorder(rows, "head"), stopper],
    )
    assert not requested and len(rows) == 2  # Keras' early stopping never stops after the first epoch
    stop, events, rows = threading.Event(), [], []

    def hook(event):
        events.append(event)
        stop.set()

    progress = ProgressCallback(
        hook, stop, phase="head", history=rows, epochs_before=0, total_epochs=5, started=0.0
    )
    requested = fit_distributed(
        model,
        make_strategy("default"),
        batches(x, y, batch_size=2),
        batches(x, y),
        5,
        [HistoryRecorder(rows, "head"), progress],
    )
    # Asked at the phase's first report (batch 0, before any batch); the request reaches every worker
    # with a later batch; then the epoch ends.
    assert requested and len(rows) == 1 and [e.batch for e in events] == [0, 1, 2, 10]


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (the workers bind them a moment later)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_train_in_step_and_only_the_chief_writes(synthetic_dataset, tmp_path):
    """`clothclf train --strategy multi-worker` in two processes on 127.0.0.1 (TF_CONFIG): one run folder."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    out = tmp_path / "runs" / "together"
    command = [
        sys.executable,
        "-m",
        "clothclf",
        "train",
        "--data",
        str(synthetic_dataset),
        "--json",
        "--backbone",
        "custom_cnn",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--epochs",
        "2",
        "--strategy",
        "multi-worker",
        "--out",
        str(out),
    ]
    workers = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TF_CONFIG": json.dumps(tf_config)}
        workers.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    try:
        outputs = [worker.communicate(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert [w.returncode for w in workers] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    chief, other = (json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs)
    assert chief["run_dir"] == str(out) and other["run_dir"] is None
    assert chief["weights_digest"] == other["weights_digest"]
    assert chief["epochs"] == other["epochs"] == 2
    assert os.listdir(out.parent) == [out.name]
    assert is_complete_run(out)
    assert weights_digest(load_model(str(out / "model.keras"))) == chief["weights_digest"]
    assert read_json(out / "config.json")["train"]["strategy"] == "multi-worker"
