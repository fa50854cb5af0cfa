"""What the app can show: the models a session can pick, where their images are, and their photos.

Tables here are lists of dicts (no pandas) so any front end can render them. Nothing here imports
TensorFlow or Streamlit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clothclf.app.training_data import UPLOADS_DIR
from clothclf.config import Paths
from clothclf.console import duration_text
from clothclf.data.datasets import IMAGE_EXTENSIONS
from clothclf.errors import DatasetError, RunError
from clothclf.runs import (
    CLASS_NAMES,
    DIGESTED_FILES,
    SUMMARY,
    TRAINING_SPLIT,
    RunInfo,
    evaluation_files,
    integrity_problem,
    is_complete_run,
    is_model_folder,
    read_class_names,
    read_summary,
    saved_evaluations,
    scan_runs,
)

log = logging.getLogger(__name__)

#: The dataset splits shown first wherever saved evaluations are listed.
EVAL_SPLITS = (TRAINING_SPLIT, "test")


@dataclass(frozen=True)
class ModelEntry:
    """One model a session can use: the shipped default or a complete training run."""

    name: str
    path: Path
    is_default: bool
    summary: dict[str, Any]
    class_names: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def label(self) -> str:
        """The name shown in pickers: the run name, marked when it is the default model."""
        return f"{self.name} (default)" if self.is_default else self.name

    @property
    def run(self) -> RunInfo | None:
        """The run behind this model, or None if the folder holds only a model and class names."""
        return RunInfo(self.path, self.summary) if is_complete_run(self.path) else None


def describe_model(path: str | Path, *, is_default: bool = False) -> ModelEntry | None:
    """A :class:`ModelEntry` for the model folder at ``path``, or None if it holds no usable model."""
    path = Path(path)
    if not is_model_folder(path):
        return None
    try:
        summary = read_summary(path) if (path / SUMMARY).is_file() else {}
        names = tuple(read_class_names(path))
    except RunError as exc:
        log.warning("model %s left out: %s", path, exc)
        return None
    return ModelEntry(summary.get("name", path.name), path, is_default, summary, names)


def _shipped_folders(default_model_dir: Path) -> list[Path]:
    """Earlier shipped models kept for comparison: model folders beside the default one (by name)."""
    parent = Path(default_model_dir).parent
    if not parent.is_dir():
        return []
    folders = sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [f for f in folders if f.resolve() != Path(default_model_dir).resolve()]


def shipped_models(default_model_dir: Path) -> list[ModelEntry]:
    """Earlier shipped models kept for comparison: model folders beside the default one (by name)."""
    found = (describe_model(f) for f in _shipped_folders(default_model_dir))
    return [entry for entry in found if entry is not None]


@dataclass(frozen=True)
class LeftOut:
    """A model or run folder the app does not offer, and why (one sentence, naming the file)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class ModelScan:
    """What :func:`scan_models` found: the models a session can load, and the folders left out."""

    entries: tuple[ModelEntry, ...]
    left_out: tuple[LeftOut, ...]


def scan_models(paths: Paths) -> ModelScan:
    """The default model (if it exists), the earlier shipped models beside it, then every complete run
    under ``paths.runs_dir``, each listed only if its model files match the SHA-256 digests its
    ``run.json`` records (:func:`clothclf.runs.verify_model_files`, which loading checks too); the
    folders left out, with why: damaged or changed model files, no recorded digests, broken run files.
    Reads every model file (a few tens of MB a run): callers that draw pages often cache it by
    :func:`models_stamp`."""
    candidates = [describe_model(paths.default_model_dir, is_default=True)]
    candidates += [describe_model(f) for f in _shipped_folders(paths.default_model_dir)]
    runs, broken = scan_runs(paths.runs_dir)
    candidates += [ModelEntry(r.name, r.path, False, r.summary, tuple(r.class_names())) for r in runs]
    entries, seen = [], set()
    left_out = [LeftOut(folder, reason) for folder, reason in broken]
    for entry in candidates:
        if entry is None or entry.path.resolve() in seen:
            continue
        seen.add(entry.path.resolve())
        problem = integrity_problem(entry.path)
        if problem is None:
            entries.append(entry)
        else:
            log.warning("model %s left out: %s", entry.path, problem)
            left_out.append(LeftOut(entry.path, problem))
    return ModelScan(tuple(entries), tuple(left_out))


def list_models(paths: Paths) -> list[ModelEntry]:
    """The models a session can load (:func:`scan_models`), in its order."""
    return list(scan_models(paths).entries)


def models_stamp(paths: Paths) -> tuple[tuple[str, int, int], ...]:
    """What changes when a model folder does (a run added, removed, rewritten, a model file touched):
    the path, size and modification time of every run file and model file :func:`scan_models` reads."""
    folders = [Path(paths.default_model_dir), *_shipped_folders(paths.default_model_dir)]
    runs_dir = Path(paths.runs_dir)
    if runs_dir.is_dir():
        folders += sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    stamp = []
    for folder in folders:
        for name in (SUMMARY, CLASS_NAMES, *DIGESTED_FILES):
            with contextlib.suppress(OSError):
                status = (folder / name).stat()
                stamp.append((str(folder / name), status.st_size, status.st_mtime_ns))
    return tuple(stamp)


def find_model(entries: Sequence[ModelEntry], path: str | Path) -> ModelEntry | None:
    """The entry whose folder is ``path``, or None."""
    target = Path(path).resolve()
    return next((e for e in entries if e.path.resolve() == target), None)


def same_classes(first: ModelEntry, second: ModelEntry) -> bool:
    """Whether two models sort photos into the same classes (so their per-class scores compare)."""
    return sorted(first.class_names) == sorted(second.class_names)


def _percent(metrics: dict | None, key: str) -> float | None:
    return None if metrics is None or key not in metrics else 100 * float(metrics[key])


def _score(metrics: dict | None, key: str) -> float | None:
    return None if metrics is None or key not in metrics else float(metrics[key])


def _created(summary: dict[str, Any]) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(summary["created"])
    except (KeyError, TypeError, ValueError):
        return None


def models_table(entries: Sequence[ModelEntry]) -> list[dict[str, Any]]:
    """One row per model with its key facts and metrics: accuracies in percent, F1 from 0 to 1,
    ``created`` as a date and time, None wherever something is unknown (a split never evaluated)."""
    rows = []
    for entry in entries:
        run = entry.run
        val = run.metrics("validation") if run else None
        test = run.metrics("test") if run else None
        rows.append(
            {
                "model": entry.label,
                "dataset": dataset_name(run),
                "classes": f"{entry.num_classes}: {', '.join(entry.class_names)}",
                "backbone": entry.summary.get("backbone"),
                "image size": entry.summary.get("image_size"),
                "epochs": entry.summary.get("epochs"),
                "val accuracy": _percent(val, "accuracy"),
                "val macro-F1": _score(val, "macro_f1"),
                "test accuracy": _percent(test, "accuracy"),
                "test macro-F1": _score(test, "macro_f1"),
                "training time": duration_text(entry.summary.get("seconds")),
                "created": _created(entry.summary),
                "path": str(entry.path),
            }
        )
    return rows


def dataset_name(run: RunInfo | None) -> str:
    """What a run trained on, in a few words: ``default dataset``, ``uploaded zip`` or another folder by
    name (``(deleted)`` once it is gone), or ``unknown`` (a model folder without its run)."""
    if run is None:
        return "unknown"
    recorded = recorded_dataset_root(run)
    if not recorded:
        return "default dataset"
    folder = Path(recorded)
    name = "uploaded zip" if UPLOADS_DIR in folder.parts else folder.name
    return name if folder.is_dir() else f"{name} (deleted)"


def evaluated_splits(run: RunInfo) -> list[str]:
    """The saved evaluations with both metrics and predictions: validation and test first, then any
    other ``clothclf evaluate`` saved (``evaluations/<name>/``), by name."""
    named = sorted({files.name for files in saved_evaluations(run.path)} - set(EVAL_SPLITS))
    return [
        name
        for name in (*EVAL_SPLITS, *named)
        if (files := evaluation_files(run.path, name)) is not None and files.predictions.is_file()
    ]


def recorded_dataset_root(run: RunInfo | None) -> str | None:
    """The dataset folder ``run`` recorded, or None for a run on the default dataset (which records
    none, wherever it lives) and for runs saved before datasets were recorded."""
    if run is None:
        return None
    try:
        return run.config().get("dataset", {}).get("root")
    except (OSError, ValueError):
        return None


def dataset_root_for(run: RunInfo | None, paths: Paths | None = None) -> Path | None:
    """Where ``run``'s images are: the folder it recorded (None once that is gone, e.g. an uploaded
    zip deleted after its run: other photos must not stand in for them); for a run on the default
    dataset, the default dataset folder if it exists, else None."""
    recorded = recorded_dataset_root(run)
    if recorded:
        return Path(recorded) if Path(recorded).is_dir() else None
    fallback = (paths or Paths.from_env()).default_dataset_dir
    return fallback if fallback.is_dir() else None


def image_path(root: str | Path, file: str) -> Path:
    """The absolute path of a prediction row's ``file`` under ``root``; :class:`DatasetError` if it
    would lead outside ``root`` (absolute paths, ``..``, symlinks out)."""
    root = Path(root).resolve()
    path = (root / file).resolve()
    if not path.is_relative_to(root):
        raise DatasetError(f"{file!r} is outside the dataset folder {root}")
    return path


def example_photos(root: str | Path | None, limit: int = 6) -> list[Path]:
    """Up to ``limit`` held-out photos of different classes (test split first, then validation).

    Deterministic: the first image (by name) of each class, classes in name order. Empty when
    ``root`` is None or holds neither split.
    """
    if root is None:
        return []
    picked: dict[str, Path] = {}
    for split in ("test", "validation"):
        folder = Path(root) / split
        if not folder.is_dir():
            continue
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            if class_dir.name in picked:
                continue
            images = sorted(
                p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if images:
                picked[class_dir.name] = images[0]
    return list(picked.values())[:limit]
