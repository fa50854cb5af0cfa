"""Run folders: the one module that knows their file names; written atomically, listed and read back
(no TensorFlow).

A run folder holds its model (``model.keras`` and ``model.tflite``, or for a head-only run
``features.tflite`` and ``head.npz``; ``model_int8.tflite`` after ``clothclf export --int8``),
``trust.npz`` (the feature bank of trust scores), ``class_names.json``, ``config.json`` (every
hyperparameter, dataset fingerprint, seed, library versions), ``history.csv``, ``split.json`` (folder
datasets), the metrics and predictions of the splits training scored (``metrics_<split>.json``,
``predictions_<split>.csv``) and ``run.json`` (the summary, written last). It is built under a hidden
``.partial-<name>`` folder and renamed into place when complete, so a run killed half-way never looks
like a usable model. Evaluations made later (``clothclf evaluate``) are saved under
``evaluations/<name>/`` (``metrics.json``, ``predictions.csv``) and never overwrite what training wrote.

Every file is written through :func:`atomic_path` (a temporary file renamed into place), so a reader
never sees a half-written one.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
import logging
import math
import os
import re
import reprlib
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clothclf.errors import RunError

log = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"
SUMMARY = "run.json"
CLASS_NAMES = "class_names.json"
CONFIG = "config.json"
HISTORY = "history.csv"
SPLIT = "split.json"
KERAS_MODEL = "model.keras"
LITERT_MODEL = "model.tflite"
#: The optional full-integer LiteRT model (``clothclf export --int8``, backend ``litert-int8``).
INT8_MODEL = "model_int8.tflite"
FEATURES_MODEL = "features.tflite"
HEAD_WEIGHTS = "head.npz"
#: The feature bank of a run's training photos (see :mod:`clothclf.serving.trust`).
TRUST_FILE = "trust.npz"
#: The folder of evaluations saved after training: ``evaluations/<name>/metrics.json`` and ``predictions.csv``.
EVALUATIONS = "evaluations"
EVALUATION_METRICS = "metrics.json"
EVALUATION_PREDICTIONS = "predictions.csv"
#: The app's overlays of dataset decisions (see :mod:`clothclf.data.overlay`): ``<runs_dir>/.overlays/<fingerprint>.json``.
OVERLAYS_DIR = ".overlays"
#: The split whose metrics and predictions every trained run holds (its temperature is fitted on it).
TRAINING_SPLIT = "validation"
#: Any one of these is a servable model: a whole model, or a head-only run's extractor and head.
MODEL_FILES = ((LITERT_MODEL,), (FEATURES_MODEL, HEAD_WEIGHTS), (KERAS_MODEL,))
#: Every model file a run may hold; ``run.json`` records the SHA-256 digest of each one present.
MODEL_FILE_NAMES = tuple(dict.fromkeys(name for files in MODEL_FILES for name in files))
#: The files whose SHA-256 digest ``run.json`` records and loading checks: every model file, int8 too.
DIGESTED_FILES = (*MODEL_FILE_NAMES, INT8_MODEL)
#: A model folder's files a process needs to serve it (whichever of them exist), e.g. a Ray worker.
SERVING_FILES = (CLASS_NAMES, SUMMARY, LITERT_MODEL, INT8_MODEL, FEATURES_MODEL, HEAD_WEIGHTS, TRUST_FILE)
#: What a downloaded model bundle holds (those present): the models, what they predict, how they did.
BUNDLE_PATTERNS = (
    KERAS_MODEL,
    LITERT_MODEL,
    INT8_MODEL,
    FEATURES_MODEL,
    HEAD_WEIGHTS,
    TRUST_FILE,
    CLASS_NAMES,
    CONFIG,
    SUMMARY,
    HISTORY,
    "metrics_*.json",
    f"{EVALUATIONS}/*/{EVALUATION_METRICS}",
)
_EVALUATION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (hidden, same suffix) to write to; renamed to ``path`` when the
    block succeeds and removed when it fails, so ``path`` is never half-written."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{threading.get_ident()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write rows of dicts (same keys) as CSV, atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings."""
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


@dataclass(frozen=True)
class ModelFiles:
    """The model files a folder holds (None where absent)."""

    litert: Path | None
    int8: Path | None
    features: Path | None
    head: Path | None
    keras: Path | None

    @property
    def head_only(self) -> bool:
        """Whether it holds a head-only run's model: the extractor's LiteRT model and the head's weights."""
        return self.features is not None and self.head is not None

    @property
    def servable(self) -> bool:
        """Whether at least one whole model is there (LiteRT, head-only pair, or Keras)."""
        return self.litert is not None or self.head_only or self.keras is not None


def model_files(folder: str | Path) -> ModelFiles:
    """Which model files ``folder`` holds."""
    folder = Path(folder)

    def present(name: str) -> Path | None:
        return folder / name if (folder / name).is_file() else None

    return ModelFiles(
        *(present(name) for name in (LITERT_MODEL, INT8_MODEL, FEATURES_MODEL, HEAD_WEIGHTS, KERAS_MODEL))
    )


def is_model_folder(folder: str | Path) -> bool:
    """Whether clothclf can serve ``folder``: class names and at least one model (``run.json`` optional)."""
    return (Path(folder) / CLASS_NAMES).is_file() and model_files(folder).servable


@dataclass(frozen=True)
class EvaluationFiles:
    """Where one saved evaluation of a model folder lives: its metrics and per-image predictions."""

    name: str
    metrics: Path
    predictions: Path


def training_evaluation(folder: str | Path, split: str = TRAINING_SPLIT) -> EvaluationFiles:
    """Where training saves the metrics and predictions of ``split`` beside the model (may be missing)."""
    folder = Path(folder)
    return EvaluationFiles(split, folder / f"metrics_{split}.json", folder / f"predictions_{split}.csv")


def evaluation_files(folder: str | Path, name: str) -> EvaluationFiles | None:
    """The saved evaluation ``name`` of ``folder``: ``evaluations/<name>/`` if ``clothclf evaluate`` saved
    one, else what training (or a clothclf from before ``evaluations/``) wrote beside the model; None if
    there is none."""
    saved = Path(folder) / EVALUATIONS / name
    if _EVALUATION_NAME.fullmatch(name) and (saved / EVALUATION_METRICS).is_file():
        return EvaluationFiles(name, saved / EVALUATION_METRICS, saved / EVALUATION_PREDICTIONS)
    beside = training_evaluation(folder, name)
    return beside if beside.metrics.is_file() else None


def saved_evaluations(folder: str | Path) -> list[EvaluationFiles]:
    """Every evaluation saved in ``folder``: those beside the model, then ``evaluations/*``."""
    folder = Path(folder)
    beside = [
        training_evaluation(folder, path.name.removeprefix("metrics_").removesuffix(".json"))
        for path in sorted(folder.glob("metrics_*.json"))
    ]
    named = [
        EvaluationFiles(path.parent.name, path, path.parent / EVALUATION_PREDICTIONS)
        for path in sorted(folder.glob(f"{EVALUATIONS}/*/{EVALUATION_METRICS}"))
    ]
    return beside + named


def evaluation_folder(folder: str | Path, name: str) -> Path:
    """Where the evaluation ``name`` of ``folder`` is saved; :class:`RunError` if ``name`` is not a plain
    file name (up to 64 letters, digits, ``_``, ``-``, ``.``, not starting with ``.``)."""
    if not _EVALUATION_NAME.fullmatch(name):
        raise RunError(f"{name!r} cannot name an evaluation: use letters, digits, '_', '-' and '.'")
    return Path(folder) / EVALUATIONS / name


def save_evaluation(folder: str | Path, name: str, metrics: dict, predictions: list[dict]) -> Path:
    """Save an evaluation as ``evaluations/<name>/metrics.json`` and ``predictions.csv`` in ``folder`` and
    return that folder; what training wrote is never touched. :class:`RunError` for a name that is not
    a plain file name, or a folder that cannot be written."""
    target = evaluation_folder(folder, name)
    try:
        target.mkdir(parents=True, exist_ok=True)
        write_csv(target / EVALUATION_PREDICTIONS, predictions)
        write_json(target / EVALUATION_METRICS, metrics)  # last: its presence marks the evaluation saved
    except OSError as exc:
        raise RunError(f"cannot save the evaluation into {target}: {exc}") from exc
    return target


def write_evaluation(folder: Path, split: str, metrics: dict, predictions: list[dict]) -> None:
    """Write the metrics and per-image predictions of a split training scored beside the model."""
    files = training_evaluation(folder, split)
    write_json(files.metrics, metrics)
    write_csv(files.predictions, predictions)


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
    """Write a trained run's records into ``work``, after its model files: class names, history,
    validation metrics and predictions, the split, the config, and ``run.json`` last (the summary
    that marks it complete, with the SHA-256 digest of each model file)."""
    write_json(work / CLASS_NAMES, list(class_names))
    write_csv(work / HISTORY, history)
    write_evaluation(work, TRAINING_SPLIT, metrics, predictions)
    if split_record is not None:
        write_json(work / SPLIT, split_record)
    write_json(work / CONFIG, config)
    write_json(work / SUMMARY, {**summary, "sha256": model_digests(work)})  # the model files come first


def new_run_name(backbone: str) -> str:
    """A sortable, unique-enough run name: ``20261121-143000-mobilenet_v2``."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{backbone}"


#: A run name a person chose: a safe folder name on any system, never hidden (``.partial-…``, ``..``).
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def checked_run_name(name: str) -> str:
    """``name`` if it is a safe run folder name; :class:`RunError` saying what is allowed otherwise."""
    if not RUN_NAME.fullmatch(name):
        raise RunError(
            f"{name!r} cannot name a run: use up to 64 letters, digits, '-', '_' and '.', "
            "starting with a letter or digit"
        )
    return name


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


# --- what run.json and class_names.json may hold -----------------------------------------------


@dataclass(frozen=True)
class FieldRule:
    """What one ``run.json`` field may hold: a test of the value and the words for it."""

    accepts: Callable[[Any], bool]
    expected: str


def _finite(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float (10**400)
        return False


def number(low: float, high: float) -> FieldRule:
    """A finite number in [low, high]."""
    return FieldRule(lambda v: _finite(v) and low <= v <= high, f"a finite number from {low:g} to {high:g}")


def integer(low: int, high: int) -> FieldRule:
    """A whole number in [low, high]."""
    return FieldRule(
        lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high,
        f"a whole number from {low} to {high}",
    )


def _iso_time(value: Any) -> bool:
    try:
        dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return True


TEXT = FieldRule(lambda v: isinstance(v, str), "a string")
FLAG = FieldRule(lambda v: isinstance(v, bool), "true or false")
TIMESTAMP = FieldRule(_iso_time, "an ISO 8601 date and time")
SHA256 = re.compile(r"[0-9a-f]{64}")
HASHES = FieldRule(
    lambda v: (
        isinstance(v, dict)
        and all(k in DIGESTED_FILES and isinstance(h, str) and SHA256.fullmatch(h) for k, h in v.items())
    ),
    "an object of model file names and their SHA-256 digests (64 hex digits)",
)

#: Every field ``run.json`` may hold and what it must be; other fields are kept unchecked. A new
#: field (say, a threshold) is one more entry here.
RUN_FIELDS: dict[str, FieldRule] = {
    "name": TEXT,
    "status": TEXT,
    "created": TIMESTAMP,
    "backbone": TEXT,
    "image_size": integer(16, 4096),
    "head_only": FLAG,
    "tta": FLAG,
    "num_classes": integer(2, 100_000),
    "epochs": integer(0, 1_000_000),
    "seconds": number(0, 1e9),
    "val_accuracy": number(0, 1),
    "val_macro_f1": number(0, 1),
    "best_val_accuracy": number(0, 1),
    "temperature": number(0.01, 100),
    "sha256": HASHES,
    "overlay_digest": FieldRule(
        lambda v: v is None or (isinstance(v, str) and re.fullmatch(r"[0-9a-f]{32}", v) is not None),
        "null or the overlay's digest (32 hex digits)",
    ),
}


def check_summary(summary: Any, source: Path) -> dict[str, Any]:
    """``summary`` (parsed ``run.json``) if every known field holds what :data:`RUN_FIELDS` says;
    :class:`RunError` naming the first field that does not."""
    if not isinstance(summary, dict):
        raise RunError(f"{source}: must be a JSON object, not {_json_type(summary)}")
    for name, rule in RUN_FIELDS.items():
        if name in summary and not rule.accepts(summary[name]):
            raise RunError(f"{source}: field {name!r} must be {rule.expected}, not {_short(summary[name])}")
    return summary


def check_class_names(names: Any, source: Path) -> list[str]:
    """``names`` if it is a list of at least two distinct non-empty strings; :class:`RunError` if not."""
    if not (
        isinstance(names, list)
        and len(names) >= 2
        and all(isinstance(n, str) and n.strip() for n in names)
        and len(set(names)) == len(names)
    ):
        raise RunError(f"{source}: must be a list of at least two distinct class names, not {_short(names)}")
    return names


def _json_type(value: Any) -> str:
    return {list: "a list", str: "a string", dict: "an object", bool: "true/false"}.get(
        type(value), "a number" if isinstance(value, int | float) else "null"
    )


def _short(value: Any) -> str:
    """``repr(value)``, shortened (a 401-digit number, a long list)."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = short.maxlong = 40
    short.maxlist = short.maxdict = 4
    return short.repr(value)


def _read_checked(path: Path, check: Callable[[Any, Path], Any]) -> Any:
    try:
        value = read_json(path)
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: cannot be read as JSON ({exc})") from exc
    return check(value, path)


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The run's ``run.json``, checked against :data:`RUN_FIELDS`; :class:`RunError` naming what is wrong."""
    return _read_checked(Path(run_dir) / SUMMARY, check_summary)


def read_class_names(run_dir: Path) -> list[str]:
    """The run's checked ``class_names.json``; :class:`RunError` if it is not a list of class names."""
    return _read_checked(Path(run_dir) / CLASS_NAMES, check_class_names)


def check_run(path: Path) -> dict[str, Any]:
    """The summary of the complete run at ``path``; :class:`RunError` saying why it is not one."""
    if not (path / SUMMARY).is_file():
        raise RunError(f"{path} is not a complete clothclf run (no {SUMMARY})")
    summary = read_summary(path)
    if summary.get("status") != "complete":
        raise RunError(f"{path} is not a complete clothclf run (run.json status {summary.get('status')!r})")
    if not model_files(path).servable:
        raise RunError(
            f"{path} is not a complete clothclf run (no model file: {', '.join(MODEL_FILE_NAMES)})"
        )
    read_class_names(path)
    return summary


def is_complete_run(path: Path) -> bool:
    """A folder with a valid ``run.json`` whose status is complete, valid class names and a model file."""
    try:
        check_run(path)
    except RunError:
        return False
    return True


def model_digests(run_dir: Path) -> dict[str, str]:
    """The SHA-256 digest of each model file in ``run_dir``."""
    return {name: _sha256(run_dir / name) for name in DIGESTED_FILES if (run_dir / name).is_file()}


def record_model_digests(run_dir: Path) -> None:
    """Write the digests of the folder's model files into its ``run.json`` (after a model file changed,
    or to vouch for a model folder made by hand: a ``run.json`` holding only them is made if missing)."""
    path = Path(run_dir) / SUMMARY
    summary = read_json(path) if path.is_file() else {}
    write_json(path, {**summary, "sha256": model_digests(Path(run_dir))})


def verify_model_files(run_dir: Path, names: Iterable[str]) -> None:
    """:class:`RunError` unless each model file ``names`` matches the SHA-256 digest ``run.json``
    records for it. A file without a recorded digest is refused too (no ``run.json``, ``{}``, a run
    saved before digests): deleting or emptying ``run.json`` must not switch the check off, and a
    damaged model file can load and answer wrongly."""
    run_dir = Path(run_dir)
    recorded = read_summary(run_dir).get("sha256", {}) if (run_dir / SUMMARY).is_file() else {}
    for name in names:
        if name not in recorded:
            raise RunError(
                f"{run_dir / name} has no SHA-256 digest recorded in {run_dir / SUMMARY} (the file is "
                "missing or records none), so clothclf cannot tell whether it was changed or damaged and "
                'does not load it. If you trust the folder, record its digests: python -c "from '
                f"clothclf.runs import record_model_digests; record_model_digests('{run_dir}')\""
            )
        if _sha256(run_dir / name) != recorded[name]:
            raise RunError(
                f"{run_dir / name} does not match the SHA-256 digest recorded in run.json: "
                "the file was changed or damaged after the run was saved"
            )


def integrity_problem(folder: Path) -> str | None:
    """Why the model files ``folder`` holds would not load (:func:`verify_model_files` on each), or
    None when every one matches its recorded digest."""
    try:
        verify_model_files(folder, [name for name in DIGESTED_FILES if (Path(folder) / name).is_file()])
        return None
    except RunError as exc:
        return str(exc)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
        files = evaluation_files(self.path, split)
        return read_json(files.metrics) if files else None

    def predictions(self, split: str) -> list[dict[str, str]] | None:
        """Saved per-image predictions of ``split``, or None."""
        files = evaluation_files(self.path, split)
        return read_csv(files.predictions) if files and files.predictions.is_file() else None

    def history(self) -> list[dict[str, str]]:
        """Per-epoch history rows (phase, epoch, loss, accuracy, val_loss, val_accuracy, lr)."""
        path = self.path / HISTORY
        return read_csv(path) if path.is_file() else []

    def config(self) -> dict[str, Any]:
        """The resolved training config."""
        return read_json(self.path / CONFIG)

    def class_names(self) -> list[str]:
        return read_json(self.path / CLASS_NAMES)


def load_run(path: str | Path) -> RunInfo:
    """The run at ``path``; :class:`RunError` (naming the file and field) if it is missing, incomplete
    or malformed."""
    path = Path(path)
    return RunInfo(path, check_run(path))


def list_runs(runs_dir: str | Path) -> list[RunInfo]:
    """Complete runs under ``runs_dir``, newest first. Partial folders are left out silently, broken
    ones with a logged warning that says why."""
    found, broken = scan_runs(runs_dir)
    for folder, reason in broken:
        log.warning("run %s left out: %s", folder.name, reason)
    return found


def scan_runs(runs_dir: str | Path) -> tuple[list[RunInfo], list[tuple[Path, str]]]:
    """The complete runs under ``runs_dir`` (newest first) and the folders that are not, each with
    why: broken run files, or model files without ``run.json``. Hidden folders (runs being written)
    and folders holding no model are not runs and are in neither."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return [], []
    found, broken = [], []
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (folder / SUMMARY).is_file():
            if is_model_folder(folder):
                reason = f"{folder} holds a model but no {SUMMARY}, so its files cannot be checked"
                broken.append((folder, reason))
            continue
        try:
            found.append(load_run(folder))
        except RunError as exc:
            broken.append((folder, str(exc)))
    return sorted(found, key=lambda r: r.summary.get("created", ""), reverse=True), broken


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
            archive.write(path, f"{run.path.name}/{path.relative_to(run.path).as_posix()}")
    return buffer.getvalue()
