"""tf.data input pipelines that hold no split in TensorFlow's memory: batches of feature arrays taken
in place (the head), or a split's photos streamed from disk through the one decoder (fine-tuning);
shuffled anew each epoch, augmented if asked, prefetched."""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf

from clothclf.config import AugmentConfig
from clothclf.data.datasets import Split
from clothclf.data.images import load_image
from clothclf.errors import ClothclfError

log = logging.getLogger(__name__)

#: Batches made ahead of the one the model is working on.
PREFETCH_BATCHES = 2


class RandomQuarterTurn(keras.layers.Layer):
    """Turns each image of a batch of square images a quarter, either way, with probability ``rate``."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.seed = rate, seed

    def call(self, images, training: bool = True):
        if not training or not self.rate:
            return images
        draw = tf.random.uniform(tf.shape(images)[:1], seed=self.seed)[:, None, None, None]
        left, right = tf.image.rot90(images, 1), tf.image.rot90(images, 3)
        return tf.where(draw < self.rate / 2, left, tf.where(draw < self.rate, right, images))

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class RandomBlur(keras.layers.Layer):
    """Blurs each image of a batch with probability ``rate``: a Gaussian of a standard deviation drawn
    between 0.5 and ``max_sigma`` pixels (out-of-focus or resampled photos)."""

    def __init__(self, rate: float, max_sigma: float = 2.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.max_sigma, self.seed = rate, max_sigma, seed

    def call(self, images, training: bool = True):
        if not training or not self.rate:
            return images
        count = tf.shape(images)[0]
        # One draw: two random ops given the same seed would return the same numbers.
        draw, spread = tf.unstack(tf.random.uniform([2, count], seed=self.seed))
        sigma = 0.5 + (self.max_sigma - 0.5) * spread
        radius = int(np.ceil(3 * self.max_sigma))
        offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
        kernels = tf.exp(-0.5 * (offsets[None, :] / sigma[:, None]) ** 2)
        kernels /= tf.reduce_sum(kernels, axis=1, keepdims=True)  # (count, taps), one per image
        blurred = tf.map_fn(_separable_blur, (images, kernels), fn_output_signature=images.dtype)
        return tf.where((draw < self.rate)[:, None, None, None], blurred, images)

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate, "max_sigma": self.max_sigma, "seed": self.seed}


def _separable_blur(image_and_kernel):
    """One (h, w, c) image convolved with a 1-D kernel along both axes (edges reflected)."""
    image, kernel = image_and_kernel
    radius = (tf.shape(kernel)[0] - 1) // 2
    channels = tf.shape(image)[-1]
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    rows = tf.tile(kernel[:, None, None, None], [1, 1, channels, 1])
    columns = tf.tile(kernel[None, :, None, None], [1, 1, channels, 1])
    out = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(out, columns, [1, 1, 1, 1], "VALID")[0]


def build_augmenter(
    config: AugmentConfig, seed: int = 42, quarter_turns: float = 0.0, zoom_in: float = 0.0, blur: float = 0.0
) -> keras.Sequential | None:
    """Keras preprocessing layers for training-time augmentation, or None when disabled.

    ``quarter_turns``: share of images turned a quarter, either way; ``zoom_in``: a random zoom into
    the image keeping at least ``1 - zoom_in`` of each side (a random crop), after the other steps;
    ``blur``: share of images blurred (:class:`RandomBlur`).
    """
    if not config.enabled:
        return None
    steps: list[keras.layers.Layer] = []
    if config.flip:
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if quarter_turns:
        steps.append(RandomQuarterTurn(quarter_turns, seed=seed))
    if config.rotation:
        steps.append(keras.layers.RandomRotation(config.rotation, fill_mode="reflect", seed=seed))
    if config.zoom:
        steps.append(keras.layers.RandomZoom(config.zoom, fill_mode="reflect", seed=seed))
    if zoom_in:
        steps.append(keras.layers.RandomZoom((-zoom_in, 0.0), fill_mode="reflect", seed=seed))
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
    if blur:  # its own seed: a random op seeded like the quarter turns' would turn and blur the same photos
        steps.append(RandomBlur(blur, seed=seed + 1))
    return keras.Sequential(steps, name="augment") if steps else None


def mix_batch(x: tf.Tensor, targets: tuple[tf.Tensor, ...], alpha: float, seed: int) -> tuple[tf.Tensor, ...]:
    """MixUp: each image, and each of ``targets`` (one-hot labels, sample weights), blended with the
    batch's image at the same position of a random permutation, by a share drawn from Beta(alpha, alpha)
    per image (the larger of the two draws' shares: each image stays the main one of its blend)."""
    count = tf.shape(x)[0]
    first = tf.random.gamma([count], alpha, seed=seed)
    share = first / (first + tf.random.gamma([count], alpha, seed=seed + 1))
    share = tf.maximum(share, 1.0 - share)
    other = tf.random.shuffle(tf.range(count), seed=seed + 2)

    def blend(values: tf.Tensor) -> tf.Tensor:
        weight = tf.reshape(share, [-1] + [1] * (len(values.shape) - 1))
        return weight * values + (1.0 - weight) * tf.gather(values, other)

    return (blend(x), *(blend(t) for t in targets))


def _class_table(values: dict[int, float] | None, num_classes: int) -> np.ndarray | None:
    """Per-class values as an array indexed by label (None stays None)."""
    if values is None:
        return None
    return np.asarray([values.get(i, 0.0) for i in range(num_classes)], np.float32)


def _indices(count: int, batch_size: int, shuffle: bool, seed: int) -> tf.data.Dataset:
    """Batches of row numbers 0..count-1, in a new order each epoch if ``shuffle`` (8 bytes a row)."""
    dataset = tf.data.Dataset.range(count)
    if shuffle:
        dataset = dataset.shuffle(max(count, 1), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size)


def make_dataset(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    sample_weights: dict[int, float] | None = None,
    seed: int = 42,
) -> tf.data.Dataset:
    """Batches of (float32 rows of ``features``, one-hot labels[, sample weights]), taken from the
    arrays in place as they are needed.

    Nothing is copied into TensorFlow (``from_tensor_slices`` would copy the arrays, and Keras' own
    ``fit`` on arrays does too): memory holds the features once and a few batches.
    """
    labels = np.asarray(labels, np.int32)
    one_hot, weights = np.eye(num_classes, dtype=np.float32), _class_table(sample_weights, num_classes)
    count = 2 if weights is None else 3

    def take(rows: np.ndarray) -> list[np.ndarray]:
        y = labels[rows]
        batch = [np.asarray(features[rows], np.float32), one_hot[y]]
        return batch if weights is None else [*batch, weights[y]]

    def load(rows):
        batch = tf.numpy_function(take, [rows], [tf.float32] * count, stateful=False)
        for tensor, shape in zip(batch, [(None, *features.shape[1:]), (None, num_classes), (None,)]):
            tensor.set_shape(shape)
        return tuple(batch)

    return _indices(len(labels), batch_size, shuffle, seed).map(load).prefetch(PREFETCH_BATCHES)


def _decoder(image_size: int):
    """A NumPy function for ``tf.numpy_function``: a file path to (pixels, readable?) by the one decoder."""

    def decode(path: bytes) -> tuple[np.ndarray, bool]:
        try:
            return load_image(path.decode(), image_size), True
        except ClothclfError as exc:
            log.warning("skipped an unreadable image: %s", exc)
            return np.zeros((image_size, image_size, 3), np.uint8), False

    return decode


def make_file_dataset(
    split: Split,
    image_size: int,
    num_classes: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    augmenter: keras.Sequential | None = None,
    mixup: float = 0.0,
    sample_weights: dict[int, float] | None = None,
    targets: np.ndarray | None = None,
    seed: int = 42,
) -> tf.data.Dataset:
    """Batches of (float32 pixels 0-255, targets[, sample weights]) read from disk and decoded
    by :func:`clothclf.data.images.load_image` as they are needed, augmented and mixed
    (:func:`mix_batch`, ``mixup`` > 0) if asked. ``targets`` is a row of class probabilities per
    photo of ``split`` (default: the one-hot label; e.g. a teacher's answers blended in).

    Memory holds the file names and a few batches whatever the split's size; unreadable files are
    skipped with a warning.
    """
    paths = np.asarray([str(p) for p in split.files], dtype=str)
    labels = np.asarray(split.labels, np.int32)
    targets = np.eye(num_classes, dtype=np.float32)[labels] if targets is None else targets
    if targets.shape != (len(paths), num_classes):
        raise ValueError(f"targets must have shape ({len(paths)}, {num_classes}), not {targets.shape}")
    dataset = tf.data.Dataset.from_tensor_slices((paths, labels, targets.astype(np.float32)))
    if shuffle:
        dataset = dataset.shuffle(max(len(paths), 1), seed=seed, reshuffle_each_iteration=True)
    decode = _decoder(image_size)

    def load(path, label, target):
        pixels, readable = tf.numpy_function(decode, [path], (tf.uint8, tf.bool), stateful=False)
        pixels.set_shape((image_size, image_size, 3))
        return pixels, label, target, readable

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.filter(lambda pixels, label, target, readable: readable).batch(batch_size)
    weights = _class_table(sample_weights, num_classes)

    def to_float(pixels, label, target, readable):
        x = tf.cast(pixels, tf.float32)
        if augmenter is not None:
            x = tf.clip_by_value(augmenter(x, training=True), 0.0, 255.0)
        outputs = (target,) + (() if weights is None else (tf.gather(weights, label),))
        return mix_batch(x, outputs, mixup, seed) if mixup else (x, *outputs)

    return dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(PREFETCH_BATCHES)
