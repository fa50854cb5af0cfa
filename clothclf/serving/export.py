"""Convert Keras models for TensorFlow-free serving: a LiteRT (``.tflite``) model, or a head as NumPy arrays."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import keras
import numpy as np

from clothclf.errors import RunError
from clothclf.modeling.models import load_model


def export_tflite(model: keras.Model, path: str | Path) -> Path:
    """Write ``model`` as a float32 LiteRT flatbuffer at ``path`` (atomically) and return the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.tflite")
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(str(tmp), format="litert", verbose=False)
    os.replace(tmp, path)
    return path


def export_run(model_dir: str | Path, overwrite: bool = False) -> Path:
    """Add ``model.tflite`` to a run folder that has only ``model.keras`` (older runs)."""
    model_dir = Path(model_dir)
    source = model_dir / "model.keras"
    target = model_dir / "model.tflite"
    if not source.is_file():
        raise RunError(f"{model_dir}: no model.keras to export")
    if target.is_file() and not overwrite:
        return target
    return export_tflite(load_model(str(source)), target)


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
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, activations=np.asarray(activations), **arrays)
    os.replace(tmp, path)
    return path
