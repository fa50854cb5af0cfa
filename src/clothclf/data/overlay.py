"""Decisions about a dataset's photos (keep, relabel to a class, exclude), kept beside it, never in it.

An overlay is a small versioned JSON file: the fingerprint of the dataset it was made for and one
decision per photo (its path relative to the dataset folder, a digest of its bytes, the action and,
for a relabel, the class). The photos are never moved, renamed or deleted: the decisions are applied
when a :class:`~clothclf.data.datasets.Dataset`'s splits are read (``create_dataset(..., overlay=FILE)``).
The app keeps one overlay per dataset fingerprint in ``<runs_dir>/.overlays/``. Writes are atomic and
keep the previous file beside the new one (``<name>.prev``), so no decision is ever lost.

A corrupt overlay (not JSON, another version, an unknown action) or a stale one (a photo gone or
changed, a class the dataset does not have) raises :class:`OverlayError` with one clear sentence.
No TensorFlow, no Streamlit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from clothclf.config import Paths
from clothclf.errors import DatasetError
from clothclf.runs import OVERLAYS_DIR, atomic_path

#: The overlay file format's version; a file of another version is refused.
OVERLAY_VERSION = 1
KEEP, RELABEL, EXCLUDE = "keep", "relabel", "exclude"
ACTIONS = (KEEP, RELABEL, EXCLUDE)
#: Suffix of the previous overlay kept beside the current one on every write.
PREVIOUS_SUFFIX = ".prev"


class OverlayError(DatasetError):
    """An overlay file is corrupt, of another version, or no longer fits its dataset."""


@dataclass(frozen=True)
class Decision:
    """What to do with one photo: ``keep`` it as labelled, ``relabel`` it to ``label``, or ``exclude`` it."""

    file: str  # relative to the dataset folder, with forward slashes
    action: str
    label: str | None = None
    digest: str = ""  # of the photo's bytes when the decision was made ("" : not checked)


@dataclass(frozen=True)
class Overlay:
    """The decisions made on one dataset (its :func:`~clothclf.data.datasets.dataset_fingerprint`)."""

    fingerprint: str
    decisions: tuple[Decision, ...] = ()

    def to_json(self) -> dict:
        """The file's JSON object (decisions sorted by file, so equal overlays have equal bytes)."""
        rows = [dataclasses.asdict(d) for d in sorted(self.decisions, key=lambda d: d.file)]
        return {"version": OVERLAY_VERSION, "fingerprint": self.fingerprint, "decisions": rows}

    def digest(self) -> str:
        """A short content digest of the decisions: what a run records of the overlay it trained with."""
        text = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.blake2b(text, digest_size=16).hexdigest()

    def by_file(self) -> dict[str, Decision]:
        """The decisions keyed by relative file."""
        return {d.file: d for d in self.decisions}

    def decide(self, decision: Decision) -> Overlay:
        """A copy with ``decision`` replacing any earlier one on the same photo."""
        others = tuple(d for d in self.decisions if d.file != decision.file)
        return Overlay(self.fingerprint, (*others, decision))

    def changes(self) -> tuple[Decision, ...]:
        """The decisions that change the dataset (relabel, exclude); ``keep`` only records a review."""
        return tuple(d for d in self.decisions if d.action != KEEP)


def file_digest(path: Path) -> str:
    """A short digest of a photo's bytes."""
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=12).hexdigest()


def overlay_path(paths: Paths, fingerprint: str) -> Path:
    """Where the app keeps the overlay of the dataset with ``fingerprint``."""
    return paths.runs_dir / OVERLAYS_DIR / f"{fingerprint}.json"


def _decision(row: object, source: Path) -> Decision:
    if not isinstance(row, dict) or not isinstance(row.get("file"), str):
        raise OverlayError(f"{source}: every decision needs a file name; the overlay is corrupt")
    action, label = row.get("action"), row.get("label")
    if action not in ACTIONS:
        raise OverlayError(
            f"{source}: unknown action {action!r} for {row['file']} (choose keep, relabel or exclude)"
        )
    if action == RELABEL and not isinstance(label, str):
        raise OverlayError(f"{source}: the relabel of {row['file']} names no class")
    return Decision(row["file"], action, label if action == RELABEL else None, str(row.get("digest") or ""))


def read_overlay(path: str | Path) -> Overlay:
    """The overlay in ``path``; :class:`OverlayError` if it is missing, corrupt or of another version."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OverlayError(f"{path}: no such overlay file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OverlayError(f"{path}: not a readable overlay file ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("decisions"), list):
        raise OverlayError(f"{path}: not an overlay file (expected version, fingerprint and decisions)")
    if data.get("version") != OVERLAY_VERSION:
        raise OverlayError(
            f"{path}: overlay version {data.get('version')!r}; this clothclf reads version {OVERLAY_VERSION}"
        )
    return Overlay(str(data.get("fingerprint", "")), tuple(_decision(r, path) for r in data["decisions"]))


def write_overlay(path: str | Path, overlay: Overlay) -> Path:
    """Write ``overlay`` to ``path`` atomically, the file it replaces kept as ``<path>.prev``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        with atomic_path(path.with_name(path.name + PREVIOUS_SUFFIX)) as tmp:
            shutil.copyfile(path, tmp)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(overlay.to_json(), indent=1) + "\n", encoding="utf-8")
    return path


def load_or_new(path: Path, fingerprint: str) -> Overlay:
    """The overlay at ``path``, or an empty one for ``fingerprint`` if there is none yet."""
    return read_overlay(path) if path.is_file() else Overlay(fingerprint)


def check_overlay(
    overlay: Overlay, root: Path, class_names: tuple[str, ...], source: str = "the overlay"
) -> None:
    """:class:`OverlayError` if a decision names a photo that is gone or changed, or a class not in ``class_names``."""
    for decision in overlay.decisions:
        path = Path(root) / decision.file
        if not path.is_file():
            raise OverlayError(f"{source} is stale: {decision.file} is no longer in the dataset")
        if decision.digest and file_digest(path) != decision.digest:
            raise OverlayError(f"{source} is stale: {decision.file} has changed since it was reviewed")
        if decision.action == RELABEL and decision.label not in class_names:
            raise OverlayError(
                f"{source} relabels {decision.file} to {decision.label!r}, which is not a class of the dataset"
            )


def corrected_labels(
    files: tuple[str, ...], labels: tuple[int, ...], overlay: Overlay, class_names: tuple[str, ...]
) -> list[tuple[int, int | None]]:
    """For each (relative file, label): (original label, corrected label or None if excluded)."""
    decided = overlay.by_file()
    corrected: list[tuple[int, int | None]] = []
    for file, label in zip(files, labels):
        decision = decided.get(file)
        if decision is None or decision.action == KEEP:
            corrected.append((label, label))
        elif decision.action == EXCLUDE:
            corrected.append((label, None))
        else:
            corrected.append((label, class_names.index(decision.label)))
    return corrected
