"""clothclf: clothing-photo classification with TensorFlow/Keras transfer learning.

Importing this package is light: TensorFlow is imported only by training, export and the Keras
serving fallback, never by :func:`load_classifier` when a LiteRT model exists.
"""

from __future__ import annotations

from clothclf._version import __version__
from clothclf.errors import (
    ClothclfError,
    DatasetError,
    InvalidImageError,
    LimitExceededError,
    RunError,
)


def load_classifier(model_dir=None, **kwargs):
    """Load a classifier (the default model if ``model_dir`` is None). See :mod:`clothclf.serving.classifier`."""
    from clothclf.serving.classifier import load_classifier as _load

    return _load(model_dir, **kwargs)


#: Public names imported on first use, so ``import clothclf`` stays light (``train`` imports TensorFlow).
_LAZY = {
    "Classifier": "clothclf.serving.classifier",
    "Prediction": "clothclf.serving.classifier",
    "train": "clothclf.training.loop",
}


def __getattr__(name: str):
    """``clothclf.Classifier``, ``clothclf.Prediction`` and ``clothclf.train``, imported when first used."""
    if name not in _LAZY:
        raise AttributeError(f"module 'clothclf' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [
    "Classifier",
    "ClothclfError",
    "DatasetError",
    "InvalidImageError",
    "LimitExceededError",
    "Prediction",
    "RunError",
    "load_classifier",
    "train",
    "__version__",
]
