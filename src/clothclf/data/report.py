"""The dataset report shown before training: photos per class and split, what was skipped and why,
identical photos across splits or classes (leakage), tiny photos, and the refusals.

Every photo is read once through the one decoder (:func:`clothclf.data.images.load_image`, at a small size),
so a class whose photos are all unreadable is refused before anything runs. No TensorFlow here.
A report is cached by the dataset's content fingerprint when a cache folder is given.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from clothclf.config import TrainConfig
from clothclf.data.datasets import (
    LAYOUTS,
    MIN_PHOTOS_PER_CLASS,
    SPLITS,
    Dataset,
    create_dataset,
    dataset_fingerprint,
)
from clothclf.data.images import load_image
from clothclf.data.layout import Skipped
from clothclf.errors import DatasetError
from clothclf.runs import write_text

#: A photo smaller than this on its shorter side is listed as tiny.
TINY_SIDE = 64
#: Bumped when the report's content changes, so cached reports are recomputed.
REPORT_VERSION = 1


@dataclass(frozen=True)
class Photo:
    """One photo as the report saw it: its split, class, content digest, size, or why it is unreadable."""

    path: str  # relative to the dataset root
    split: str
    label: str
    digest: str
    width: int = 0
    height: int = 0
    error: str = ""


@dataclass(frozen=True)
class Duplicates:
    """Identical files (same bytes) found under more than one name."""

    files: tuple[str, ...]
    kind: str  # "across splits" (leakage), "across classes" (conflicting labels) or "within a class"


@dataclass(frozen=True)
class DatasetReport:
    """What a dataset holds and whether it can train (``problems`` empty)."""

    root: str
    layout: str
    class_names: tuple[str, ...]
    counts: dict[str, dict[str, int]]  # split -> class -> readable photos
    skipped: tuple[Skipped, ...]
    duplicates: tuple[Duplicates, ...]
    tiny: tuple[str, ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether the dataset can train."""
        return not self.problems

    def raise_if_refused(self) -> None:
        """Raise :class:`DatasetError` with the problems' sentences if the dataset cannot train."""
        if self.problems:
            raise DatasetError(" ".join(self.problems))

    @property
    def leakage(self) -> tuple[Duplicates, ...]:
        """Identical photos in two splits or two classes: they make validation and test scores lie."""
        return tuple(d for d in self.duplicates if d.kind != "within a class")

    @property
    def unvalidated(self) -> tuple[str, ...]:
        """Classes with no readable validation photo, in a dataset that has validation photos: training
        cannot measure how well it recognises them (their validation recall is undefined)."""
        validation = self.counts.get("validation", {})
        if not any(validation.values()):
            return ()  # no validation photo at all: a refusal (``problems``), not a class's gap
        return tuple(name for name in self.class_names if not validation.get(name, 0))

    def count_rows(self) -> list[dict]:
        """Photos per class (rows) and split (columns), as a table's rows."""
        return [
            {"class": name, **{s: by[name] for s, by in self.counts.items()}} for name in self.class_names
        ]

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {**asdict(self), "version": REPORT_VERSION}

    @classmethod
    def from_dict(cls, values: dict) -> DatasetReport:
        """Inverse of :meth:`to_dict`."""
        return cls(
            root=values["root"],
            layout=values["layout"],
            class_names=tuple(values["class_names"]),
            counts=values["counts"],
            skipped=tuple(Skipped(**s) for s in values["skipped"]),
            duplicates=tuple(Duplicates(tuple(d["files"]), d["kind"]) for d in values["duplicates"]),
            tiny=tuple(values["tiny"]),
            problems=tuple(values["problems"]),
        )


def inspect_photo(path: Path, root: Path, split: str, label: str) -> Photo:
    """Hash and decode one file (at 16 px: every byte of it is decoded, at little cost)."""
    rel = path.relative_to(root).as_posix()
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Photo(rel, split, label, "", error=f"cannot be read ({exc.strerror})")
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    try:
        load_image(data, 16)
        with Image.open(path) as image:
            width, height = image.size
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this file's message
        reason = str(exc).removeprefix("<bytes>: ")
        return Photo(rel, split, label, digest, error=reason)
    return Photo(rel, split, label, digest, width, height)


def _photos(dataset: Dataset, workers: int) -> list[Photo]:
    jobs = [
        (path, split, dataset.class_names[label])
        for split in SPLITS
        for path, label in zip(dataset.split(split).files, dataset.split(split).labels)
    ]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda job: inspect_photo(job[0], dataset.root, *job[1:]), jobs))


def find_duplicates(photos: list[Photo]) -> tuple[Duplicates, ...]:
    """Groups of byte-identical photos, labelled by what they break."""
    groups: dict[str, list[Photo]] = {}
    for photo in photos:
        if photo.digest:
            groups.setdefault(photo.digest, []).append(photo)
    found = []
    for group in groups.values():
        if len(group) < 2:
            continue
        if len({p.split for p in group}) > 1:
            kind = "across splits"
        elif len({p.label for p in group}) > 1:
            kind = "across classes"
        else:
            kind = "within a class"
        found.append(Duplicates(tuple(sorted(p.path for p in group)), kind))
    return tuple(sorted(found, key=lambda d: d.files))


def _problems(photos: list[Photo], class_names: tuple[str, ...]) -> tuple[str, ...]:
    """One sentence per reason the dataset cannot train once unreadable photos are left out."""
    readable = [p for p in photos if not p.error]
    if not readable:
        example = photos[0]
        return (
            f"none of the {len(photos)} photos can be read (for example {example.path}: {example.error}).",
        )
    problems = []
    per_class = {name: sum(1 for p in readable if p.label == name) for name in class_names}
    for name, count in per_class.items():
        files = [p for p in photos if p.label == name]
        if not count:
            problems.append(
                f"class {name!r} has no readable photo: all {len(files)} of its files failed to decode "
                f"(for example {files[0].path}: {files[0].error})."
            )
        elif count < MIN_PHOTOS_PER_CLASS:
            problems.append(
                f"class {name!r} has only {count} readable photos; each class needs at least "
                f"{MIN_PHOTOS_PER_CLASS}."
            )
    if not any(p.split == "validation" for p in readable):
        problems.append("the validation split has no readable photo.")
    return tuple(problems)


def build_report(dataset: Dataset, workers: int | None = None) -> DatasetReport:
    """Read every photo of ``dataset`` and describe it (see the module docstring)."""
    photos = _photos(dataset, workers or min(8, (os.cpu_count() or 2) * 2))
    counts = {
        split: {name: 0 for name in dataset.class_names} for split in SPLITS if len(dataset.split(split))
    }
    for photo in photos:
        if not photo.error:
            counts[photo.split][photo.label] += 1
    unreadable = tuple(Skipped(p.path, f"unreadable: {p.error}") for p in photos if p.error)
    tiny = tuple(p.path for p in photos if not p.error and min(p.width, p.height) < TINY_SIDE)
    return DatasetReport(
        root=str(dataset.root),
        layout=dataset.layout,
        class_names=dataset.class_names,
        counts=counts,
        skipped=dataset.skipped + unreadable,
        duplicates=find_duplicates(photos),
        tiny=tiny,
        problems=_problems(photos, dataset.class_names),
    )


def dataset_report(dataset: Dataset, cache_dir: Path | None = None) -> DatasetReport:
    """:func:`build_report`, cached in ``cache_dir/reports`` under the dataset's content fingerprint."""
    if cache_dir is None:
        return build_report(dataset)
    key = hashlib.blake2b(dataset_fingerprint(dataset).encode(), digest_size=16)
    key.update(json.dumps([s.to_dict() for s in dataset.skipped]).encode())
    cached = Path(cache_dir) / "reports" / f"{key.hexdigest()}.json"
    try:
        values = json.loads(cached.read_text())
        if values.get("version") == REPORT_VERSION and values["root"] == str(dataset.root):
            return DatasetReport.from_dict(values)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    report = build_report(dataset)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_text(cached, json.dumps(report.to_dict()))
    except OSError:
        pass  # a cache that cannot be written only costs time
    return report


def training_report(config: TrainConfig, cache_dir: Path | None = None) -> DatasetReport:
    """The report of the dataset ``config`` trains on (split as training will split it);
    :class:`DatasetError` if the reader refuses it. ``raise_if_refused`` refuses the rest."""
    dataset = create_dataset(config.data_dir, config.seed, config.val_fraction, config.test_fraction)
    return dataset_report(dataset, cache_dir)


def format_report(report: DatasetReport) -> str:
    """The report as plain text (what ``clothclf data check`` prints)."""
    splits = list(report.counts)
    lines = [f"dataset: {report.root} ({LAYOUTS.get(report.layout, report.layout)})"]
    width = max([len(n) for n in report.class_names] + [5])
    lines.append(f"{'class':<{width}} " + " ".join(f"{s:>10}" for s in splits))
    for name in report.class_names:
        lines.append(f"{name:<{width}} " + " ".join(f"{report.counts[s][name]:>10}" for s in splits))
    lines.append(f"{'total':<{width}} " + " ".join(f"{sum(report.counts[s].values()):>10}" for s in splits))
    if report.skipped:
        lines.append(f"skipped ({len(report.skipped)}):")
        lines += [
            f"  {s.path}: {s.reason}" + (f" ({s.files} files)" if s.files > 1 else "") for s in report.skipped
        ]
    for group in report.duplicates:
        lines.append(f"identical photos {group.kind}: {', '.join(group.files)}")
    if report.tiny:
        lines.append(
            f"tiny photos (under {TINY_SIDE} px on a side): {len(report.tiny)}, e.g. {report.tiny[0]}"
        )
    if report.unvalidated:
        lines.append(
            f"no validation photos of: {', '.join(report.unvalidated)} (their accuracy cannot be measured)"
        )
    lines += [f"refused: {problem}" for problem in report.problems]
    return "\n".join(lines)
