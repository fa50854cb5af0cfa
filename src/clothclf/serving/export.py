"""Convert Keras models for TensorFlow-free serving: a LiteRT (``.tflite``) model, or a head as NumPy arrays."""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterable, Iterator
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


def export_tflite(model: keras.Model, path: str | Path) -> Path:
    """Write ``model`` as a float32 LiteRT flatbuffer at ``path`` (atomically) and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp, contextlib.redirect_stdout(io.StringIO()):
        model.export(str(tmp), format="litert", verbose=False)
    return path


#: Training photos whose activations calibrate an int8 model's quantization ranges.
CALIBRATION_PHOTOS = 200


def export_tflite_int8(model: keras.Model, path: str | Path, calibration: Iterable[np.ndarray]) -> Path:
    """Write ``model`` as a full-integer LiteRT model at ``path`` (atomically) and return the path.

    Weights and activations are int8 (input and output stay float32, so serving is unchanged); the
    activations' ranges are calibrated on ``calibration``, decoded ``uint8`` images at the model's size.
    """
    import tensorflow as tf

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="clothclf-int8-") as saved:
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


def export_trust_model(model: keras.Model, path: str | Path) -> Path:
    """Write ``model`` as LiteRT with its probabilities, pooled features and last feature map as outputs."""
    return export_tflite(with_trust_outputs(model), path)


def export_run(model_dir: str | Path, overwrite: bool = False) -> Path:
    """Add ``model.tflite`` to a run folder that has only ``model.keras`` (older runs)."""
    model_dir = Path(model_dir)
    source, target = model_dir / KERAS_MODEL, model_dir / LITERT_MODEL
    if not source.is_file():
        raise RunError(f"{model_dir}: no {KERAS_MODEL} to export")
    if target.is_file() and not overwrite:
        return target
    verify_model_files(model_dir, [KERAS_MODEL])
    export_trust_model(load_model(str(source)), target)
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
