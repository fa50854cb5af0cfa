"""tf.data input pipelines: parallel decode (with the shared Pillow decoder), cache, augment, prefetch."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from clothclf.config import AugmentConfig
from clothclf.datasets import Split
from clothclf.errors import ClothclfError
from clothclf.images import load_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodedSplit:
    """A split decoded to ``uint8`` pixels; files that could not be read are left out."""

    images: np.ndarray  # (n, size, size, 3) uint8
    labels: np.ndarray  # (n,) int
    files: tuple[Path, ...]
    skipped: tuple[str, ...]


def _try_load(path: Path, size: int) -> np.ndarray | ClothclfError:
    try:
        return load_image(path, size)
    except ClothclfError as exc:
        return exc


def decode_split(split: Split, image_size: int, workers: int | None = None) -> DecodedSplit:
    """Decode every file of ``split`` in parallel threads. Unreadable files are skipped, with one warning."""
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda p: _try_load(p, image_size), split.files))
    keep = [i for i, r in enumerate(results) if isinstance(r, np.ndarray)]
    skipped = tuple(str(split.files[i]) for i, r in enumerate(results) if isinstance(r, Exception))
    if skipped:
        log.warning("skipped %d unreadable image(s): %s", len(skipped), ", ".join(skipped))
    images = (
        np.stack([results[i] for i in keep]) if keep else np.zeros((0, image_size, image_size, 3), np.uint8)
    )
    labels = np.asarray([split.labels[i] for i in keep], dtype=np.int32)
    return DecodedSplit(images, labels, tuple(split.files[i] for i in keep), skipped)


def build_augmenter(config: AugmentConfig, seed: int = 42) -> keras.Sequential | None:
    """Keras preprocessing layers for training-time augmentation, or None when disabled."""
    if not config.enabled:
        return None
    steps: list[keras.layers.Layer] = []
    if config.flip:
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if config.rotation:
        steps.append(keras.layers.RandomRotation(config.rotation, fill_mode="reflect", seed=seed))
    if config.zoom:
        steps.append(keras.layers.RandomZoom(config.zoom, fill_mode="reflect", seed=seed))
    if config.translation:
        steps.append(
            keras.layers.RandomTranslation(
                config.translation, config.translation, fill_mode="reflect", seed=seed
            )
        )
    if config.contrast:
        steps.append(keras.layers.RandomContrast(config.contrast, value_range=(0, 255), seed=seed))
    if config.brightness:
        steps.append(keras.layers.RandomBrightness(config.brightness, value_range=(0, 255), seed=seed))
    return keras.Sequential(steps, name="augment") if steps else None


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    augmenter: keras.Sequential | None = None,
    sample_weights: dict[int, float] | None = None,
    seed: int = 42,
) -> tf.data.Dataset:
    """Batches of (float32 pixels 0-255, one-hot labels[, sample weights]), augmented if asked, prefetched."""
    one_hot = np.eye(num_classes, dtype=np.float32)[labels]
    tensors: tuple = (images, one_hot)
    if sample_weights is not None:
        weights = np.asarray([sample_weights[int(y)] for y in labels], dtype=np.float32)
        tensors = (images, one_hot, weights)
    dataset = tf.data.Dataset.from_tensor_slices(tensors).cache()
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)

    def to_float(x, *rest):
        x = tf.cast(x, tf.float32)
        if augmenter is not None:
            x = tf.clip_by_value(augmenter(x, training=True), 0.0, 255.0)
        return (x, *rest)

    return dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
