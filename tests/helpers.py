"""What tests build, in one place: paths, tiny synthetic images and datasets, encoded photos, tiny configs.

Fixtures live in ``conftest.py``; plain helpers live here and are imported as ``from helpers import ...``.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASET = PROJECT_ROOT.parent / "shared" / "data" / "clothing-dataset-small"
CLASSES = ("red", "green", "blue")


def make_image(class_index: int, rng: np.random.Generator, size: int = 24) -> Image.Image:
    """A noisy image whose dominant colour channel is its class: learnable in one epoch."""
    array = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
    array[..., class_index] += 150
    return Image.fromarray(array)


def zip_bytes(entries: dict, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of ``entries`` (name or ``zipfile.ZipInfo`` -> bytes); ZipInfo entries keep their own settings."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def write_dataset(root: Path, per_split: dict[str, int], seed: int = 0) -> Path:
    """A dataset with train/validation/test folders (or a flat class folder if per_split has key '')."""
    rng = np.random.default_rng(seed)
    for split, count in per_split.items():
        for ci, name in enumerate(CLASSES):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                make_image(ci, rng).save(folder / f"{name}_{i}.png")
    return root


def noisy_png(class_index: int = 0, seed: int = 0) -> bytes:
    """A PNG of :func:`make_image` (24 px, its class's colour dominant)."""
    buffer = io.BytesIO()
    make_image(class_index, np.random.default_rng(seed)).save(buffer, format="PNG")
    return buffer.getvalue()


def tiny_config(dataset: Path, **changes):
    """A 32 px MobileNetV2 without ImageNet weights, head only: the cheapest real training run."""
    from clothclf.config import TrainConfig

    values = dict(
        backbone="mobilenet_v2", weights=None, image_size=32, batch_size=8, epochs=2, head_only=True, lr=1e-2
    )
    return TrainConfig(data_dir=str(dataset), **{**values, **changes})


def long_config(dataset: Path):
    """Head training that would run for minutes (no early stopping), to be cancelled or killed."""
    return tiny_config(dataset, epochs=500, patience=1000)


def dataset_sample(dataset: Path, folder: Path, per_class: int) -> Path:
    """The first ``per_class`` photos of each class of each split of ``dataset``, copied to ``folder``."""
    for split in ("train", "validation", "test"):
        for class_folder in sorted(p for p in (dataset / split).iterdir() if p.is_dir()):
            (folder / split / class_folder.name).mkdir(parents=True)
            for photo in sorted(class_folder.iterdir())[:per_class]:
                shutil.copyfile(photo, folder / split / class_folder.name / photo.name)
    return folder
