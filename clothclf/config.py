"""Configuration as frozen dataclasses: where things live (``Paths``) and how to train (``TrainConfig``)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATASET_NAME = "clothing-dataset-small"


def _user_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clothclf"


def _shipped_model_dir(project_root: Path) -> Path:
    """The project's ``models/default``, else the copy a wheel carries as ``clothclf/default_model``."""
    in_project = project_root / "models" / "default"
    return in_project if in_project.is_dir() else Path(__file__).resolve().parent / "default_model"


@dataclass(frozen=True)
class Paths:
    """Folders clothclf reads and writes. ``Paths.from_env()`` resolves them from the environment.

    - ``data_dir``: where datasets are downloaded (env ``CLOTHCLF_DATA_DIR``, else the user cache);
    - ``cache_dir``: cached backbone features (env ``CLOTHCLF_CACHE_DIR``, else the user cache);
    - ``runs_dir``: training runs (env ``CLOTHCLF_RUNS_DIR``, else ``runs/`` in the project);
    - ``default_model_dir``: the shipped model (env ``CLOTHCLF_MODEL_DIR``, else ``models/default``, or
      the copy inside the package when clothclf was installed from a wheel).
    """

    data_dir: Path
    cache_dir: Path
    runs_dir: Path
    default_model_dir: Path

    @classmethod
    def from_env(cls) -> Paths:
        project_root = Path(__file__).resolve().parents[1]
        cache_root = _user_cache_root()
        return cls(
            data_dir=Path(os.environ.get("CLOTHCLF_DATA_DIR") or cache_root / "data"),
            cache_dir=Path(os.environ.get("CLOTHCLF_CACHE_DIR") or cache_root / "features"),
            runs_dir=Path(os.environ.get("CLOTHCLF_RUNS_DIR") or project_root / "runs"),
            default_model_dir=Path(os.environ.get("CLOTHCLF_MODEL_DIR") or _shipped_model_dir(project_root)),
        )

    @property
    def default_dataset_dir(self) -> Path:
        """Where the default dataset lives: ``data_dir`` itself if it is the dataset, else inside it."""
        if (self.data_dir / "train").is_dir():
            return self.data_dir
        return self.data_dir / DATASET_NAME


@dataclass(frozen=True)
class Limits:
    """What a visitor may send: per-file size, pixels, files and megabytes per batch, and uploaded
    dataset zips. ``max_batch_mb`` keeps one visitor's photos (held by the server while shown) well
    inside a 1 GB container: 20 camera photos fit."""

    max_upload_mb: int = 20
    max_pixels: int = 50_000_000
    max_files_per_batch: int = 50
    max_batch_mb: int = 200
    max_zip_mb: int = 200
    max_zip_uncompressed_mb: int = 1024
    max_zip_entries: int = 20_000
    max_zip_ratio: float = 200.0


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation, applied as Keras preprocessing layers. Factors follow Keras' meaning."""

    enabled: bool = True
    flip: bool = True
    rotation: float = 0.05
    zoom: float = 0.15
    translation: float = 0.1
    contrast: float = 0.15
    brightness: float = 0.15


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a training run. Saved in the run folder as ``config.json``.

    Phase 1 trains the head for ``epochs`` epochs on cached features of the frozen backbone.
    Unless ``head_only``, phase 2 unfreezes the top ``fine_tune_layers`` layers of the backbone
    (batch-norm stays in inference mode) and trains ``fine_tune_epochs`` more epochs at
    ``fine_tune_lr`` with augmentation.
    """

    data_dir: str
    backbone: str = "mobilenet_v2"
    weights: str | None = "imagenet"
    image_size: int = 224
    batch_size: int = 32
    epochs: int = 10
    lr: float = 1e-3
    head_only: bool = False
    fine_tune_layers: int = 40
    fine_tune_epochs: int = 10
    fine_tune_lr: float = 1e-4
    dropout: float = 0.2
    hidden_units: int = 0
    label_smoothing: float = 0.0
    class_weights: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tta: bool = False
    patience: int = 4
    lr_schedule: str = "plateau"
    seed: int = 42
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    strategy: str = "default"
    tensorboard: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored so older configs still load."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known}
        if isinstance(kwargs.get("augment"), dict):
            kwargs["augment"] = AugmentConfig(**kwargs["augment"])
        return cls(**kwargs)

    def validate(self) -> None:
        """Raise ``ValueError`` with a clear message for values that cannot work."""
        if not 16 <= self.image_size <= 512:
            raise ValueError(f"image_size must be between 16 and 512, not {self.image_size}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be at least 1")
        if self.lr <= 0 or self.fine_tune_lr <= 0:
            raise ValueError("learning rates must be positive")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.strategy not in ("default", "mirrored"):
            raise ValueError(f"strategy must be 'default' or 'mirrored', not {self.strategy!r}")
        if self.lr_schedule not in ("plateau", "cosine"):
            raise ValueError(f"lr_schedule must be 'plateau' or 'cosine', not {self.lr_schedule!r}")
