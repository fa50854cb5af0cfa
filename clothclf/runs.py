"""Run folders: written atomically, listed, and read back (no TensorFlow).

A run folder holds ``model.keras``, ``model.tflite`` (or, for a head-only run, ``features.tflite`` and
``head.npz``), ``config.json`` (every hyperparameter,
dataset fingerprint, seed, library versions), ``class_names.json``, ``history.csv``,
``metrics_<split>.json``, ``predictions_<split>.csv`` and ``run.json`` (the summary, written last).
It is built under a hidden ``.partial-<name>`` folder and renamed into place when complete, so a run
killed half-way never looks like a usable model.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clothclf.errors import RunError

PARTIAL_PREFIX = ".partial-"
#: Any one of these is a servable model: a whole model, or a head-only run's extractor and head.
MODEL_FILES = (("model.tflite",), ("features.tflite", "head.npz"), ("model.keras",))
#: What a downloaded model bundle holds (those present): the models, what they predict, how they did.
BUNDLE_PATTERNS = (
    "model.keras",
    "model.tflite",
    "features.tflite",
    "head.npz",
    "class_names.json",
    "config.json",
    "run.json",
    "history.csv",
    "metrics_*.json",
)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON via a temporary file and rename (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write rows of dicts (same keys) as CSV, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    os.replace(tmp, path)


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings."""
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_evaluation(folder: Path, split: str, metrics: dict, predictions: list[dict]) -> None:
    """Write the metrics (``metrics_<split>.json``) and per-image predictions (``predictions_<split>.csv``)
    of one evaluated split into ``folder``."""
    write_json(folder / f"metrics_{split}.json", metrics)
    write_csv(folder / f"predictions_{split}.csv", predictions)


def write_run(
    work: Path,
    *,
    class_names: Sequence[str],
    history: list[dict],
    metrics: dict,
    predictions: list[dict],
    config: dict,
    summary: dict,
    split_record: dict | None = None,
) -> None:
    """Write a trained run's records into ``work``: class names, history, validation metrics and
    predictions, the split, the config, and ``run.json`` last (the summary that marks it complete)."""
    write_json(work / "class_names.json", list(class_names))
    write_csv(work / "history.csv", history)
    write_evaluation(work, "validation", metrics, predictions)
    if split_record is not None:
        write_json(work / "split.json", split_record)
    write_json(work / "config.json", config)
    write_json(work / "run.json", summary)


def new_run_name(backbone: str) -> str:
    """A sortable, unique-enough run name: ``20261121-143000-mobilenet_v2``."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{backbone}"


@contextlib.contextmanager
def atomic_run_dir(final_dir: str | Path) -> Iterator[Path]:
    """Yield a hidden temporary folder; rename it to ``final_dir`` only if the block succeeds."""
    final_dir = Path(final_dir)
    if final_dir.exists():
        raise RunError(f"{final_dir} already exists; choose another --out folder")
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = final_dir.parent / f"{PARTIAL_PREFIX}{final_dir.name}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
        os.replace(partial, final_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def has_model(path: Path) -> bool:
    """Whether the folder holds the files of at least one model (see ``MODEL_FILES``)."""
    return any(all((path / name).is_file() for name in files) for files in MODEL_FILES)


def is_complete_run(path: Path) -> bool:
    """A folder with ``run.json`` whose status is complete and a model file beside it."""
    try:
        summary = read_json(path / "run.json")
    except (OSError, ValueError):
        return False
    return summary.get("status") == "complete" and has_model(path) and (path / "class_names.json").is_file()


@dataclass(frozen=True)
class RunInfo:
    """What the app's tables need about one run: its folder and the summary in ``run.json``."""

    path: Path
    summary: dict[str, Any]

    @property
    def name(self) -> str:
        return self.summary.get("name", self.path.name)

    def metrics(self, split: str) -> dict[str, Any] | None:
        """Saved metrics of ``split``, or None if that split was never evaluated."""
        path = self.path / f"metrics_{split}.json"
        return read_json(path) if path.is_file() else None

    def predictions(self, split: str) -> list[dict[str, str]] | None:
        """Saved per-image predictions of ``split``, or None."""
        path = self.path / f"predictions_{split}.csv"
        return read_csv(path) if path.is_file() else None

    def history(self) -> list[dict[str, str]]:
        """Per-epoch history rows (phase, epoch, loss, accuracy, val_loss, val_accuracy, lr)."""
        path = self.path / "history.csv"
        return read_csv(path) if path.is_file() else []

    def config(self) -> dict[str, Any]:
        """The resolved training config."""
        return read_json(self.path / "config.json")

    def class_names(self) -> list[str]:
        return read_json(self.path / "class_names.json")


def load_run(path: str | Path) -> RunInfo:
    """The run at ``path``; :class:`RunError` if it is missing or incomplete."""
    path = Path(path)
    if not is_complete_run(path):
        raise RunError(f"{path} is not a complete clothclf run (no run.json, class names or model)")
    return RunInfo(path, read_json(path / "run.json"))


def list_runs(runs_dir: str | Path) -> list[RunInfo]:
    """Complete runs under ``runs_dir``, newest first; partial and broken folders are left out."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = [
        RunInfo(p, read_json(p / "run.json"))
        for p in runs_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and is_complete_run(p)
    ]
    return sorted(found, key=lambda r: r.summary.get("created", ""), reverse=True)


def zip_run(run_dir: str | Path) -> bytes:
    """A zip of a complete run's model bundle (see ``BUNDLE_PATTERNS``) inside a folder named like the run folder.

    Unzipped, the folder is itself a complete run that clothclf can load. :class:`RunError` if
    ``run_dir`` is not a complete run.
    """
    run = load_run(run_dir)
    files = sorted({p for pattern in BUNDLE_PATTERNS for p in run.path.glob(pattern) if p.is_file()})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, f"{run.path.name}/{path.name}")
    return buffer.getvalue()
