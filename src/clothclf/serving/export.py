"""Convert Keras models for TensorFlow-free serving: a LiteRT (``.tflite``) model, or a head as NumPy arrays."""

from __future__ import annotations

import contextlib
import io
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import keras
import numpy as np

from clothclf.errors import RunError
from clothclf.modeling.models import load_model, with_trust_outputs
from clothclf.runs import (
    KERAS_MODEL,
    LITERT_MODEL,
    SUMMARY,
    atomic_path,
    record_model_digests,
    verify_model_files,
)

#: ``progress(seconds so far, estimated seconds left)`` of a step with nothing to count (a conversion);
#: the estimate is None once the step has overrun it.
TimedProgress = Callable[[float, float | None], None]

#: A conversion's seconds: a fixed part, and a part per weight tensor of the model (the converted graph
#: grows with them). Measured on the shared 2-core CPU (load average 4-8): the small CNN (22 tensors)
#: 2.7-3.0 s, MobileNetV2 at 224 px (262) 23.6 s, EfficientNet-Lite2 at 260 px (322) 28.7 s; Lite2 took
#: 19.6 s at load 1.5. An estimate of how long to wait, not a promise.
CONVERSION_SECONDS = (1.0, 0.085)
#: The same for an int8 conversion, calibration on :data:`CALIBRATION_PHOTOS` photos included: the small
#: CNN 9.8 s, EfficientNet-Lite2 at 260 px 107.6 s (its first calibration photo after 19 s), load 7.
INT8_CONVERSION_SECONDS = (2.5, 0.33)

#: Seconds between two reports of a running step (:func:`timed_step`).
REPORT_INTERVAL = 1.0


def conversion_estimate(model: keras.Model, int8: bool = False) -> float:
    """Seconds a LiteRT conversion of ``model`` is expected to take, from its size
    (:data:`CONVERSION_SECONDS`, :data:`INT8_CONVERSION_SECONDS`)."""
    fixed, per_tensor = INT8_CONVERSION_SECONDS if int8 else CONVERSION_SECONDS
    return fixed + per_tensor * len(model.weights)


@contextlib.contextmanager
def timed_step(estimate: float, progress: TimedProgress | None) -> Iterator[None]:
    """Report the step running in the body, expected to take ``estimate`` seconds: ``progress(0,
    estimate)`` at once, then every :data:`REPORT_INTERVAL` seconds from a thread (the converter and
    NumPy let it run), and ``progress(seconds, 0.0)`` when it is done."""
    if progress is None:
        yield
        return
    started, done = time.monotonic(), threading.Event()

    def report() -> None:
        while not done.wait(REPORT_INTERVAL):
            elapsed = time.monotonic() - started
            progress(elapsed, estimate - elapsed if elapsed < estimate else None)

    progress(0.0, estimate)
    thread = threading.Thread(target=report, name="step-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    progress(time.monotonic() - started, 0.0)


def export_tflite(model: keras.Model, path: str | Path, progress: TimedProgress | None = None) -> Path:
    """Write ``model`` as a float32 LiteRT flatbuffer at ``path`` (atomically) and return the path;
    ``progress`` hears how the conversion goes (:func:`timed_step`, :func:`conversion_estimate`)."""
    path = Path(path)
    with atomic_path(path) as tmp, contextlib.redirect_stdout(io.StringIO()):
        with timed_step(conversion_estimate(model), progress):
            model.export(str(tmp), format="litert", verbose=False)
    return path


#: Training photos whose activations calibrate an int8 model's quantization ranges.
CALIBRATION_PHOTOS = 200


def export_tflite_int8(
    model: keras.Model,
    path: str | Path,
    calibration: Iterable[np.ndarray],
    progress: TimedProgress | None = None,
) -> Path:
    """Write ``model`` as a full-integer LiteRT model at ``path`` (atomically) and return the path.

    Weights and activations are int8 (input and output stay float32, so serving is unchanged); the
    activations' ranges are calibrated on ``calibration``, decoded ``uint8`` images at the model's size.
    ``progress`` hears how the conversion goes (:func:`timed_step`).
    """
    import tensorflow as tf

    path = Path(path)
    with (
        tempfile.TemporaryDirectory(prefix="clothclf-int8-") as saved,
        timed_step(conversion_estimate(model, int8=True), progress),
    ):
        with contextlib.redirect_stdout(io.StringIO()):
            model.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None].astype(np.float32)] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        data = converter.convert()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def calibration_images(
    data_dir: str | Path, size: int, count: int = CALIBRATION_PHOTOS
) -> Iterator[np.ndarray]:
    """``count`` photos spread evenly over the training split of ``data_dir``, decoded at ``size``."""
    from clothclf.data.datasets import create_dataset
    from clothclf.data.images import load_image

    files = create_dataset(data_dir).train.files
    for path in files[:: max(1, len(files) // count)][:count]:
        yield load_image(path, size)


def export_trust_model(model: keras.Model, path: str | Path, progress: TimedProgress | None = None) -> Path:
    """Write ``model`` as LiteRT with its probabilities, pooled features and last feature map as outputs."""
    return export_tflite(with_trust_outputs(model), path, progress)


def export_run(model_dir: str | Path, overwrite: bool = False, progress: TimedProgress | None = None) -> Path:
    """Add ``model.tflite`` to a run folder that has only ``model.keras`` (older runs); ``progress`` hears
    how the conversion goes."""
    model_dir = Path(model_dir)
    source, target = model_dir / KERAS_MODEL, model_dir / LITERT_MODEL
    if not source.is_file():
        raise RunError(f"{model_dir}: no {KERAS_MODEL} to export")
    if target.is_file() and not overwrite:
        return target
    verify_model_files(model_dir, [KERAS_MODEL])
    export_trust_model(load_model(str(source)), target, progress)
    if (model_dir / SUMMARY).is_file():
        record_model_digests(model_dir)  # the new model.tflite is checked on load like the others
    return target


def export_head(head: keras.Model, path: str | Path) -> Path:
    """Write a head built by :func:`clothclf.modeling.models.build_head` as ``head.npz`` for NumPy serving.

    Dropout is the identity at inference, so the head is its dense layers in order: ``kernel_i``,
    ``bias_i`` and the names of their activations.
    """
    arrays: dict[str, np.ndarray] = {}
    activations = []
    for layer in head.layers:
        if isinstance(layer, keras.layers.Dense):
            kernel, bias = (keras.ops.convert_to_numpy(w) for w in (layer.kernel, layer.bias))
            index = len(activations)
            arrays[f"kernel_{index}"], arrays[f"bias_{index}"] = kernel, bias
            activations.append(keras.activations.serialize(layer.activation))
        elif not isinstance(layer, (keras.layers.InputLayer, keras.layers.Dropout)):
            raise ValueError(f"cannot export a head with a {type(layer).__name__} layer")
    path = Path(path)
    with atomic_path(path) as tmp:
        np.savez(tmp, activations=np.asarray(activations), **arrays)
    return path
