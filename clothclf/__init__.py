"""clothclf: clothing-photo classification with TensorFlow/Keras transfer learning.

Importing this package is light: TensorFlow is imported only by training, export and the Keras
serving fallback, never by :func:`load_classifier` when a LiteRT model exists.
"""

from __future__ import annotations

__version__ = "0.1.0"

from clothclf.errors import (  # noqa: E402
    ClothclfError,
    DatasetError,
    InvalidImageError,
    LimitExceededError,
    RunError,
)


def load_classifier(model_dir=None, **kwargs):
    """Load a classifier (the default model if ``model_dir`` is None). See :mod:`clothclf.predict`."""
    from clothclf.predict import load_classifier as _load

    return _load(model_dir, **kwargs)


__all__ = [
    "ClothclfError",
    "DatasetError",
    "InvalidImageError",
    "LimitExceededError",
    "RunError",
    "load_classifier",
    "__version__",
]
