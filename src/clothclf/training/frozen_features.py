"""The frozen backbone features of every split, as a run's backbone computes them before any fine-tuning.

The data-issue finder (:mod:`clothclf.evaluation.data_issues`) scores photos with a head fitted on
these features. A head-only run ships its frozen extractor (``features.tflite``): that one is used as
it is. Any other run's backbone is rebuilt with the weights it started from (ImageNet for the shipped
model), as training builds it (:func:`clothclf.modeling.models.build_feature_extractor`), and
converted once into the feature cache (:func:`clothclf.data.features.extractor_tflite`). A fine-tuned
backbone is not used on purpose: it has learnt the training labels, wrong ones included.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from clothclf.config import Paths
from clothclf.data.datasets import Dataset, dataset_fingerprint
from clothclf.data.features import Features, cached_features, extractor_tflite
from clothclf.data.layout import SPLITS
from clothclf.errors import RunError
from clothclf.modeling.models import build_feature_extractor
from clothclf.runs import CONFIG, model_files, read_json


def frozen_extractor_file(model_dir: str | Path | None, paths: Paths) -> Path:
    """The LiteRT model of ``model_dir``'s frozen feature extractor (default: the shipped model's)."""
    model_dir = Path(model_dir) if model_dir else paths.default_model_dir
    files = model_files(model_dir)
    if files.head_only:
        return files.features
    if not (model_dir / CONFIG).is_file():
        raise RunError(f"{model_dir}: no {CONFIG} naming its backbone (pass --model with a run folder)")
    train = read_json(model_dir / CONFIG).get("train", {})
    backbone, size = train.get("backbone", "mobilenet_v2"), int(train.get("image_size", 224))
    weights = train.get("weights", "imagenet")
    extractor = build_feature_extractor(backbone, size, weights)
    return extractor_tflite(extractor, backbone, paths.cache_dir)


def dataset_features(
    dataset: Dataset,
    model_dir: str | Path | None,
    paths: Paths,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Features]:
    """``{split: Features}`` of every split with photos, from the feature cache or computed into it."""
    report = progress or (lambda done, what: None)
    report(0.0, "loading the feature extractor")
    model_file = frozen_extractor_file(model_dir, paths)
    fingerprint = dataset_fingerprint(dataset)
    names = [s for s in SPLITS if len(dataset.split(s))]
    found = {}
    for number, split in enumerate(names):
        report((number + 0.1) / len(names), f"features of the {split} photos")
        found[split] = cached_features(
            model_file, dataset, split, cache_dir=paths.cache_dir, fingerprint=fingerprint
        )
    report(1.0, "features ready")
    return found
