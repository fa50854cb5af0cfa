"""Configuration as frozen dataclasses: where things live (``Paths``) and how to train (``TrainConfig``)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clothclf.modeling.backbones import BACKBONES

#: Bytes in a megabyte (sizes and limits are given in MB).
MB = 1024 * 1024
#: How a model folder can be served (see :func:`clothclf.serving.classifier.load_classifier`).
BACKENDS = ("auto", "litert", "litert-int8", "keras")

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
        project_root = Path(__file__).resolve().parents[2]  # src/clothclf/config.py
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
    dataset zips, and how long a training job started from the app may run. ``max_batch_mb`` keeps
    one visitor's photos (held by the server while shown) well inside a 1 GB container: 20 camera
    photos fit."""

    max_upload_mb: int = 20
    max_pixels: int = 50_000_000
    max_files_per_batch: int = 50
    max_batch_mb: int = 200
    max_zip_mb: int = 200
    max_zip_uncompressed_mb: int = 1024
    max_zip_entries: int = 20_000
    max_zip_ratio: float = 200.0
    #: Minutes a training job may run; it stops itself at the next batch after that (nothing is saved)
    #: and is killed if it has not ended a grace period later.
    max_training_minutes: float = 120.0
    #: Extracted dataset uploads kept for reuse (checked, not yet trained on) before the oldest go.
    max_kept_uploads_mb: int = 500


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
class Option:
    """How one training option is described and checked, declared once on its :class:`TrainConfig` field
    and read by the CLI parser, :meth:`TrainConfig.validate` and the Fine-tune page.

    ``minimum``/``maximum`` are inclusive bounds, ``above``/``below`` exclusive ones; ``choices`` are the
    only values allowed; ``presets`` are values a form offers without restricting others; ``step`` is a
    form's increment. ``page`` says whether the Fine-tune page shows it. ``or_file``: besides the
    choices, the path of an existing file is allowed (the library's own weights file, not the CLI's).
    """

    label: str
    help: str
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple[Any, ...] = ()
    presets: tuple[Any, ...] = ()
    step: float | None = None
    page: bool = True
    or_file: bool = False

    def check(self, name: str, value: Any) -> None:
        """Raise ``ValueError`` with a clear sentence if ``value`` is not allowed for option ``name``."""
        if self.choices:
            if value not in self.choices and not (
                self.or_file and isinstance(value, str) and Path(value).is_file()
            ):
                allowed = ", ".join(repr(c) for c in self.choices)
                raise ValueError(f"unknown {name} {value!r}: choose one of {allowed}")
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if (self.minimum is not None and value < self.minimum) or (
            self.above is not None and value <= self.above
        ):
            raise ValueError(f"{name} must be {self.bounds()}, not {value}")
        if (self.maximum is not None and value > self.maximum) or (
            self.below is not None and value >= self.below
        ):
            raise ValueError(f"{name} must be {self.bounds()}, not {value}")

    def bounds(self) -> str:
        """The allowed range in words (``"between 32 and 512"``, ``"at least 1"``, ``"in (0, 1]"``), or ``""``."""
        low = self.minimum if self.minimum is not None else self.above
        high = self.maximum if self.maximum is not None else self.below
        if low is not None and high is not None:
            if self.above is None and self.below is None:
                return f"between {low:g} and {high:g}"
            return f"in {'(' if self.above is not None else '['}{low:g}, {high:g}{')' if self.below is not None else ']'}"
        if low is not None:
            return f"{'above' if self.above is not None else 'at least'} {low:g}"
        if high is not None:
            return f"{'below' if self.below is not None else 'at most'} {high:g}"
        return ""


def option(default: Any, label: str, help: str, **rules: Any) -> Any:
    """A :class:`TrainConfig` field with its :class:`Option` (label, help and rules) as metadata."""
    return field(default=default, metadata={"option": Option(label, help, **rules)})


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a training run. Saved in the run folder as ``config.json``.

    Phase 1 trains the head for ``epochs`` epochs on cached features of the frozen backbone.
    Unless ``head_only``, phase 2 unfreezes the top ``fine_tune_layers`` layers of the backbone
    (batch-norm stays in inference mode) and trains ``fine_tune_epochs`` more epochs at
    ``fine_tune_lr`` with augmentation.

    Recipe levers: ``optimizer`` adam or adamw (``weight_decay``), ``warmup_epochs`` of linear warm-up
    before the cosine schedule, ``ema_momentum`` > 0 to validate, checkpoint and keep a moving average
    of the weights, ``init_from``, a run whose weights start this one (only fine-tuning runs), and
    ``teacher``, a run whose answers are blended into the targets of the image phases (distillation).

    Every field but ``data_dir`` and ``augment`` is an option (see :func:`options`): declared once with
    its label, help and rules, it becomes a CLI flag of ``clothclf train``, a check of :meth:`validate`
    and a widget of the Fine-tune page.
    """

    data_dir: str
    backbone: str = option(
        "efficientnet_lite2",
        "Backbone",
        "the network under the head (custom_cnn: a small CNN trained from scratch)",
        choices=tuple(BACKBONES),
    )
    weights: str | None = option(
        "imagenet",
        "Backbone weights",
        "start the backbone from ImageNet weights, or untrained (the whole network then trains from scratch)",
        choices=("imagenet", None),
        page=False,
        or_file=True,
    )
    image_size: int = option(
        260, "Image size (px)", "side of the square images the model sees", minimum=32, maximum=512, step=32
    )
    batch_size: int = option(
        32, "Batch size", "images per training step", minimum=1, presets=(8, 16, 32, 64, 128)
    )
    epochs: int = option(10, "Epochs", "head epochs (the whole run for custom_cnn)", minimum=1)
    lr: float = option(
        1e-3, "Learning rate", "learning rate of the head phase", above=0, maximum=1.0, step=1e-4
    )
    head_only: bool = option(False, "Head only", "train the head only, on cached backbone features (fast)")
    fine_tune_layers: int = option(
        1000,
        "K: layers to unfreeze",
        "top backbone layers to unfreeze when fine-tuning (0: none; the backbone's depth or more: all)",
        minimum=0,
    )
    fine_tune_epochs: int = option(6, "Fine-tuning epochs", "epochs of the fine-tuning phase", minimum=1)
    fine_tune_lr: float = option(
        1e-4,
        "Fine-tuning learning rate",
        "learning rate of the fine-tuning phase",
        above=0,
        maximum=1.0,
        step=1e-5,
    )
    dropout: float = option(
        0.3, "Dropout", "dropout before the head's dense layers", minimum=0, below=1, step=0.05
    )
    hidden_units: int = option(0, "Hidden units", "a hidden dense layer in the head (0: none)", minimum=0)
    label_smoothing: float = option(
        0.1,
        "Label smoothing",
        "share of each target spread over the other classes",
        minimum=0,
        below=1,
        step=0.05,
    )
    class_weights: bool = option(False, "Class weights", "weight rare classes up in the loss")
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    quarter_turns: float = option(
        0.0,
        "Quarter turns",
        "share of fine-tuning photos turned a quarter, either way (photos whose orientation tag was lost)",
        minimum=0,
        maximum=1,
        step=0.05,
        page=False,
    )
    zoom_in: float = option(
        0.0,
        "Zoom in",
        "zoom fine-tuning photos in at random, keeping at least 1 - this of each side (0.4: down to 0.6)",
        minimum=0,
        below=1,
        step=0.05,
        page=False,
    )
    blur: float = option(
        0.0,
        "Blur",
        "share of fine-tuning photos blurred (a Gaussian of 0.5-2 pixels; out-of-focus photos)",
        minimum=0,
        maximum=1,
        step=0.05,
        page=False,
    )
    mixup: float = option(
        0.0,
        "MixUp",
        "blend each fine-tuning photo and its label with another of the batch by a share drawn from "
        "Beta(a, a), a being this value (0: off; 0.2 is usual)",
        minimum=0,
        maximum=1,
        step=0.05,
        page=False,
    )
    tta: bool = option(
        False, "Test-time augmentation", "average each prediction with that of the mirrored image"
    )
    patience: int = option(6, "Patience", "early-stopping patience in epochs", minimum=0)
    lr_schedule: str = option(
        "cosine",
        "Learning-rate schedule",
        "lower the rate when validation loss stalls, or cosine decay",
        choices=("plateau", "cosine"),
    )
    warmup_epochs: int = option(
        0,
        "Warm-up epochs",
        "epochs of linear learning-rate warm-up before the cosine decay (needs the cosine schedule)",
        minimum=0,
    )
    optimizer: str = option(
        "adam", "Optimizer", "Adam, or AdamW with decoupled weight decay", choices=("adam", "adamw")
    )
    weight_decay: float = option(
        0.0, "Weight decay", "AdamW's decoupled weight decay (needs adamw)", minimum=0, maximum=1.0, step=1e-3
    )
    ema_momentum: float = option(
        0.0,
        "Weight EMA momentum",
        "validate, checkpoint and keep an exponential moving average of the weights (0: off)",
        minimum=0,
        below=1,
        step=0.01,
    )
    init_from: str = option(
        "",
        "Start from run",
        "a run folder whose weights start the run (same backbone and head; only fine-tuning runs)",
        page=False,
    )
    teacher: str = option(
        "",
        "Teacher run",
        "a run folder (same classes) whose answers on the training photos are blended into the targets "
        "of the image phases (knowledge distillation, e.g. from a soup or a larger input)",
        page=False,
    )
    teacher_weight: float = option(
        0.5,
        "Teacher weight",
        "share of each target taken from the teacher's probabilities, the rest from the label (needs teacher)",
        minimum=0,
        maximum=1,
        step=0.05,
        page=False,
    )
    overlay: str = option(
        "",
        "Overlay",
        "an overlay file of decisions on the dataset's photos (keep, relabel, exclude) applied to its labels",
        page=False,
    )
    seed: int = option(42, "Seed", "random seed of the split, initialisation and augmentation", minimum=0)
    val_fraction: float = option(
        0.1,
        "Validation fraction",
        "share of each class held out for validation (datasets without splits)",
        minimum=0,
        maximum=0.5,
        step=0.05,
    )
    test_fraction: float = option(
        0.1,
        "Test fraction",
        "share of each class held out for testing (datasets without splits)",
        minimum=0,
        maximum=0.5,
        step=0.05,
    )
    strategy: str = option(
        "default",
        "Distribution strategy",
        "one device; mirrored: every local GPU (else CPU device); multi-worker: the machines in TF_CONFIG",
        choices=("default", "mirrored", "multi-worker"),
        page=False,
    )
    tensorboard: bool = option(False, "TensorBoard", "write TensorBoard logs into the run folder", page=False)
    accept_accuracy: float = option(
        0.97,
        "Accuracy of accepted answers",
        "the review threshold is the lowest confidence at which accepted validation answers reach this accuracy",
        minimum=0.5,
        maximum=0.999,
        step=0.01,
    )

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
        """Raise ``ValueError`` with a clear message for the first option whose value cannot work."""
        for name, spec in options().items():
            spec.check(name, getattr(self, name))
        if self.warmup_epochs and self.lr_schedule != "cosine":
            raise ValueError("warmup_epochs needs lr_schedule 'cosine'")
        if self.weight_decay and self.optimizer != "adamw":
            raise ValueError("weight_decay needs optimizer 'adamw'")
        if self.overlay and not Path(self.overlay).is_file():
            raise ValueError(f"overlay {self.overlay}: no such file")


def options() -> dict[str, Option]:
    """Every training option (the :class:`TrainConfig` fields that declare one), in declaration order."""
    return {f.name: f.metadata["option"] for f in dataclasses.fields(TrainConfig) if "option" in f.metadata}


def default(name: str) -> Any:
    """The default value of the :class:`TrainConfig` field ``name``."""
    return next(f.default for f in dataclasses.fields(TrainConfig) if f.name == name)
