"""Knowledge distillation: a teacher run's answers on the training photos, blended into the targets.

The teacher (any run folder with the same classes: a soup, a model at a larger input, an older
model) classifies each training photo once, clean, as it serves (LiteRT when it has a ``model.tflite``,
its own input size and temperature). Each photo's target becomes ``(1 - w) * one-hot + w * teacher``;
the image phases train on these rows (:func:`clothclf.data.pipeline.make_file_dataset`), label
smoothing and MixUp applying on top as they do to one-hot rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clothclf.data.datasets import Split, map_split
from clothclf.errors import RunError
from clothclf.serving.classifier import load_classifier


def blend_targets(labels: np.ndarray, teacher_probs: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * one-hot(labels) + weight * teacher_probs``, one row per photo (float32)."""
    one_hot = np.eye(teacher_probs.shape[1], dtype=np.float32)[np.asarray(labels, int)]
    return ((1.0 - weight) * one_hot + weight * np.asarray(teacher_probs, np.float32)).astype(np.float32)


def teacher_targets(
    teacher_dir: str | Path, split: Split, class_names: Sequence[str], weight: float
) -> np.ndarray:
    """The distillation targets of ``split``'s photos (rows in the split's order; a photo the teacher
    cannot read keeps its one-hot row, and training skips it anyway)."""
    teacher = load_classifier(teacher_dir, pool_size=1)
    if teacher.class_names != tuple(class_names):
        raise RunError(
            f"{teacher_dir}: the teacher's classes {teacher.class_names} differ from the dataset's {tuple(class_names)}"
        )
    answers = map_split(split, teacher.image_size, teacher.probabilities)
    probs = np.eye(len(class_names), dtype=np.float32)[np.asarray(split.labels, int)]
    row_of = {str(path): i for i, path in enumerate(split.files)}
    probs[[row_of[str(path)] for path in answers.files]] = answers.outputs
    return blend_targets(split.labels, probs, weight)
