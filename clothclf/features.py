"""Backbone features cached on disk, so head-only training is seconds once the cache is warm.

Features are computed once from the non-augmented images and stored as ``.npz`` under the feature
cache folder (env ``CLOTHCLF_CACHE_DIR``), keyed by dataset content, split, backbone, weights and
image size.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from clothclf.datasets import Dataset, decode_split

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Features:
    """Pooled backbone features of one split, with labels and the files they came from."""

    features: np.ndarray  # (n, d) float32
    labels: np.ndarray  # (n,) int
    files: tuple[str, ...]  # relative to the dataset root


def feature_cache_path(
    cache_dir: Path, fingerprint: str, split: str, backbone: str, weights: str | None, image_size: int
) -> Path:
    """The cache file of one (dataset content, split, backbone, weights, image size)."""
    key = f"{fingerprint}|{split}|{backbone}|{weights}|{image_size}|keras-{keras.__version__}"
    digest = hashlib.blake2b(key.encode(), digest_size=12).hexdigest()
    return Path(cache_dir) / f"{backbone}-{image_size}-{split}-{digest}.npz"


def compute_features(
    extractor: keras.Model, dataset: Dataset, split: str, image_size: int, batch_size: int = 64
) -> Features:
    """Decode a split (skipping unreadable files) and run the frozen feature extractor over it."""
    decoded = decode_split(dataset.split(split), image_size)
    features = (
        extractor.predict(decoded.images.astype(np.float32), batch_size=batch_size, verbose=0)
        if len(decoded.images)
        else np.zeros((0, extractor.output_shape[-1]), np.float32)
    )
    files = tuple(str(p.relative_to(dataset.root)) for p in decoded.files)
    return Features(features.astype(np.float32), decoded.labels, files)


def cached_features(
    extractor: keras.Model,
    dataset: Dataset,
    split: str,
    *,
    cache_dir: Path,
    fingerprint: str,
    backbone: str,
    weights: str | None,
    image_size: int,
) -> Features:
    """Features of ``split`` from the cache, computing and storing them (atomically) on a miss."""
    path = feature_cache_path(cache_dir, fingerprint, split, backbone, weights, image_size)
    if path.is_file():
        try:
            with np.load(path) as data:
                return Features(data["features"], data["labels"], tuple(data["files"].tolist()))
        except (OSError, ValueError, KeyError):
            log.warning("feature cache file %s is damaged; recomputing", path)
    result = compute_features(extractor, dataset, split, image_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, features=result.features, labels=result.labels, files=np.asarray(result.files))
    os.replace(tmp, path)
    return result
