"""tf.data input pipelines over decoded splits (see ``datasets.decode_split``): cache, shuffle, augment, prefetch."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from clothclf.config import AugmentConfig


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
