"""Convert a Keras model to a LiteRT (``.tflite``) model for TensorFlow-free serving."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import keras

from clothclf.errors import RunError
from clothclf.models import load_model


def export_tflite(model: keras.Model, path: str | Path) -> Path:
    """Write ``model`` as a float32 LiteRT flatbuffer at ``path`` (atomically) and return the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.tflite")
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
