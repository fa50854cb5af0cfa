"""Backbone features, computed by LiteRT and cached on disk, so head-only training is seconds.

The frozen feature extractor (preprocessing, backbone, pooling) is converted to LiteRT once per set of
weights and cached as ``.tflite``; it computes the features of each split about five times faster than
TensorFlow does on a CPU, and they are cached as ``.npz``. Both live in the cache folder (env
``CLOTHCLF_CACHE_DIR``): the model keyed by a digest of the backbone's weights, the features by that
digest, the dataset's content and the split. A head-only run ships the cached ``.tflite`` next to its
head, so it needs no conversion of its own.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from clothclf.allocator import release_freed_memory
from clothclf.data.datasets import Dataset, Split, SplitOutputs, map_split
from clothclf.modeling.models import with_feature_map
from clothclf.runs import atomic_path
from clothclf.serving.export import TimedProgress, export_tflite
from clothclf.serving.runtime import LiteRTRunner, available_cpus

log = logging.getLogger(__name__)

#: ``progress(done, total)``: photos done of a split's total.
PhotoProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class Features:
    """Pooled backbone features of one split, with labels and the files they came from."""

    features: np.ndarray  # (n, d) float32
    labels: np.ndarray  # (n,) int
    files: tuple[str, ...]  # relative to the dataset root


def extractor_digest(extractor: keras.Model, backbone: str) -> str:
    """A digest of what the extractor computes: backbone, input size, Keras version, outputs and every weight."""
    digest = hashlib.blake2b(digest_size=12)
    outputs = "features,feature_map"  # see extractor_tflite
    digest.update(f"{backbone}|{extractor.input_shape}|keras-{keras.__version__}|{outputs}".encode())
    for weight in extractor.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


def extractor_tflite(
    extractor: keras.Model, backbone: str, cache_dir: Path, progress: TimedProgress | None = None
) -> Path:
    """The extractor as a LiteRT model in the cache, converted on a miss (about 20-30 s; ``progress``
    hears how the conversion goes).

    Its main output is the pooled features; the last feature map is a second output, so a head-only
    run that ships this file can explain its answers (:mod:`clothclf.serving.explain`)."""
    size = int(extractor.input_shape[1])
    path = Path(cache_dir) / f"{backbone}-{size}-{extractor_digest(extractor, backbone)}.tflite"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        export_tflite(with_feature_map(extractor), path, progress)
        release_freed_memory()  # the converter's ~270 MB, not kept for the rest of the run
    return path


def compute_features(
    model_file: Path, dataset: Dataset, split: str, progress: PhotoProgress | None = None
) -> Features:
    """Run the LiteRT feature extractor over a split, decoded a chunk at a time (unreadable files
    skipped with one warning): memory holds the features (5 KB an image), never the split's pixels.
    ``progress(done, total)`` counts the photos as they are done."""
    computed, width = _run_extractor(model_file, dataset.split(split), progress)
    release_freed_memory()  # the interpreter's packed weights and the decoders' buffers
    features = computed.outputs if computed.files else np.zeros((0, width), np.float32)
    files = tuple(str(p.relative_to(dataset.root)) for p in computed.files)
    return Features(features, computed.labels, files)


def _run_extractor(
    model_file: Path, split: Split, progress: PhotoProgress | None
) -> tuple[SplitOutputs, int]:
    runner = LiteRTRunner(model_file, num_threads=available_cpus(), pool_size=1)

    def extract(images: np.ndarray) -> np.ndarray:
        return runner(images.astype(np.float32))

    computed = map_split(split, runner.input_size, extract, progress=progress)
    return computed, runner.num_outputs


def cached_features(
    model_file: Path,
    dataset: Dataset,
    split: str,
    *,
    cache_dir: Path,
    fingerprint: str,
    progress: PhotoProgress | None = None,
) -> Features:
    """Features of ``split`` from the cache, computing and storing them (atomically) on a miss
    (``progress(done, total)`` counts the photos then)."""
    path = Path(cache_dir) / f"{model_file.stem}-{split}-{fingerprint}.npz"
    if path.is_file():
        try:
            with np.load(path) as data:
                return Features(data["features"], data["labels"], tuple(data["files"].tolist()))
        except (OSError, ValueError, KeyError):
            log.warning("feature cache file %s is damaged; recomputing", path)
    result = compute_features(model_file, dataset, split, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.savez(tmp, features=result.features, labels=result.labels, files=np.asarray(result.files))
    return result
