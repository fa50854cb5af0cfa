"""Folder datasets: classes and files read by :mod:`clothclf.data.layout`, split deterministically, fingerprinted.

A dataset root holds split folders (train, validation, test, under any common name) of class
subfolders, or is a single folder of class subfolders, which :func:`create_dataset` splits
(stratified, seeded). No TensorFlow here: the tf.data side lives in :mod:`clothclf.data.pipeline`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clothclf.data.images import load_image
from clothclf.data.layout import (
    ALL,
    IMAGE_EXTENSIONS,  # noqa: F401  (re-exported for older imports)
    SPLITS,
    Layout,
    Skipped,
    class_folders,
    read_layout,
)
from clothclf.data.overlay import Overlay, check_overlay, corrected_labels, read_overlay
from clothclf.errors import ClothclfError, DatasetError

log = logging.getLogger(__name__)

#: Fewest photos a class may have: enough to keep some for training and some for validation.
MIN_PHOTOS_PER_CLASS = 5
#: Photos of each class held out for validation when clothclf makes the split (at least).
MIN_VALIDATION_PER_CLASS = 2
#: Photos kept for training in each class, at least, when clothclf makes the split.
MIN_TRAIN_PER_CLASS = 3
#: A small dataset's validation split is grown towards this many photos (enough to fit a temperature)…
SMALL_VALIDATION_PHOTOS = 50
#: …but never past this share of the photos.
MAX_VALIDATION_FRACTION = 0.25
LAYOUTS = {
    "splits": "train, validation (and test) folders as given",
    "held-out": "train (and test) folders as given; validation held out from train by clothclf",
    "folder": "one folder of class folders, split by clothclf",
}


@dataclass(frozen=True)
class Split:
    """The files of one split with their integer labels (indices into the dataset's class names)."""

    files: tuple[Path, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.files)


@dataclass(frozen=True)
class Dataset:
    """A resolved dataset: class names, the three splits, how they were made and what was skipped."""

    root: Path
    class_names: tuple[str, ...]
    train: Split
    validation: Split
    test: Split
    layout: str  # a key of LAYOUTS
    skipped: tuple[Skipped, ...] = ()
    overlay_digest: str | None = None  # of the overlay applied to the labels (see apply_overlay)

    def split(self, name: str) -> Split:
        """The split called ``name`` (train, validation or test)."""
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def split_record(self) -> dict[str, list[str]]:
        """Relative file paths of every split, to store with a run so the split can be reproduced."""
        return {name: [str(p.relative_to(self.root)) for p in self.split(name).files] for name in SPLITS}


def _labelled(by_class: dict[str, tuple[Path, ...]], class_names: tuple[str, ...]) -> Split:
    files: list[Path] = []
    labels: list[int] = []
    for name in sorted(by_class):
        files.extend(sorted(by_class[name]))
        labels.extend([class_names.index(name)] * len(by_class[name]))
    return Split(tuple(files), tuple(labels))


def scan_class_folder(
    folder: str | Path, class_names: tuple[str, ...] | None = None
) -> tuple[tuple[str, ...], Split]:
    """Files and labels of a folder of class subfolders (names in NFC, as :mod:`clothclf.data.layout` reads them).

    With ``class_names`` given, labels index into it and a subfolder not in it is an error;
    otherwise the class names are the sorted subfolder names that hold at least one photo.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    by_class = {name: files for name, files in class_folders(folder, folder, []).items() if files}
    if not by_class:
        raise DatasetError(
            f"{folder}: no class folders with images (expected one subfolder of images per class)"
        )
    if class_names is None:
        class_names = tuple(sorted(by_class))
    else:
        unknown = sorted(set(by_class) - set(class_names))
        if unknown:
            raise DatasetError(
                f"{folder}: class folders {unknown} are not among the model's classes {list(class_names)}"
            )
    return class_names, _labelled(by_class, class_names)


def _split_sizes(n: int, fractions: tuple[float, float]) -> tuple[int, int]:
    """(validation, test) photos of a class of ``n``: some of each kept for validation and training."""
    n_val = round(n * fractions[0])
    n_test = round(n * fractions[1])
    if fractions[0] > 0:
        n_val = max(n_val, MIN_VALIDATION_PER_CLASS)
    while n - n_val - n_test < MIN_TRAIN_PER_CLASS and n_test > 0:
        n_test -= 1
    while n - n_val - n_test < MIN_TRAIN_PER_CLASS and n_val > 1:
        n_val -= 1
    return (n_val, n_test) if n > 2 else (0, 0)


def stratified_split(split: Split, fractions: tuple[float, float], seed: int) -> tuple[Split, Split, Split]:
    """Split into (train, validation, test) by class, with the given validation/test fractions;
    every class keeps at least :data:`MIN_VALIDATION_PER_CLASS` validation photos when it can."""
    rng = random.Random(seed)
    parts: list[list[tuple[Path, int]]] = [[], [], []]
    by_label: dict[int, list[Path]] = {}
    for path, label in zip(split.files, split.labels):
        by_label.setdefault(label, []).append(path)
    for label in sorted(by_label):
        files = sorted(by_label[label])
        rng.shuffle(files)
        n_val, n_test = _split_sizes(len(files), fractions)
        parts[1] += [(p, label) for p in files[:n_val]]
        parts[2] += [(p, label) for p in files[n_val : n_val + n_test]]
        parts[0] += [(p, label) for p in files[n_val + n_test :]]

    def to_split(pairs: list[tuple[Path, int]]) -> Split:
        pairs = sorted(pairs)
        return Split(tuple(p for p, _ in pairs), tuple(label for _, label in pairs))

    return to_split(parts[0]), to_split(parts[1]), to_split(parts[2])


def validation_fraction(photos: int, requested: float) -> float:
    """The validation share clothclf holds out: ``requested``, grown for a small dataset towards
    :data:`SMALL_VALIDATION_PHOTOS` photos (at most :data:`MAX_VALIDATION_FRACTION`)."""
    return max(requested, min(SMALL_VALIDATION_PHOTOS / max(photos, 1), MAX_VALIDATION_FRACTION))


def _no_photos_message(layout: Layout) -> str:
    """Why a dataset has no photo at all, naming the most common reasons files were skipped."""
    reasons = Counter(s.reason for s in layout.skipped for _ in range(s.files))
    if not reasons:
        return "the dataset holds no class folders with photos (expected one folder of photos per class)"
    common = "; ".join(f"{n} {'file' if n == 1 else 'files'}: {why}" for why, n in reasons.most_common(2))
    return f"the dataset holds no photo clothclf can read ({common})"


def _refuse_untrainable(layout: Layout, class_names: tuple[str, ...]) -> None:
    """Refuse, before anything runs, a dataset that cannot train: fewer than two classes, or classes
    with fewer than :data:`MIN_PHOTOS_PER_CLASS` photos (counted over every split)."""
    totals = Counter({name: 0 for name in class_names})
    for by_class in layout.classes.values():
        totals.update({name: len(files) for name, files in by_class.items()})
    if not sum(totals.values()):
        raise DatasetError(_no_photos_message(layout))
    with_photos = sorted(name for name, n in totals.items() if n)
    if len(with_photos) < 2:
        found = f"only {with_photos[0]!r}" if with_photos else "none"
        raise DatasetError(f"a dataset needs at least two classes (folders of photos); it has {found}")
    few = sorted((n, name) for name, n in totals.items() if n < MIN_PHOTOS_PER_CLASS)
    if few:
        listed = ", ".join(f"{name} ({n})" for n, name in few[:5]) + (", …" if len(few) > 5 else "")
        raise DatasetError(
            f"each class needs at least {MIN_PHOTOS_PER_CLASS} photos ({MIN_TRAIN_PER_CLASS} to train, "
            f"{MIN_VALIDATION_PER_CLASS} to validate); {len(few)} of {len(totals)} classes have fewer: {listed}"
        )


def _split_classes(layout: Layout, split: str, class_names: tuple[str, ...]) -> Split:
    by_class = layout.classes.get(split, {})
    unknown = sorted(set(by_class) - set(class_names))
    if unknown:
        raise DatasetError(
            f"the {split} folder has classes that are not in the training folder: {', '.join(unknown)}"
        )
    return _labelled(by_class, class_names)


def create_dataset(
    root: str | Path,
    seed: int = 42,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    overlay: str | Path | None = None,
) -> Dataset:
    """Read a dataset folder (see :mod:`clothclf.data.layout`) into a :class:`Dataset`, refusing one that
    cannot train. Splits clothclf makes are stratified and seeded, with validation photos in every class.
    An ``overlay`` file's decisions are applied after the split (:func:`apply_overlay`)."""
    layout = read_layout(root)
    main_split = ALL if layout.kind == "folder" else "train"
    class_names = tuple(sorted(layout.classes[main_split]))
    _refuse_untrainable(layout, class_names)
    class_names = tuple(name for name in class_names if layout.classes[main_split][name])
    everything = _split_classes(layout, main_split, class_names)
    test = _split_classes(layout, "test", class_names)
    validation = _split_classes(layout, "validation", class_names)
    if len(validation):
        kind, train = "splits", everything
    else:
        kind = "folder" if layout.kind == "folder" else "held-out"
        fractions = (
            validation_fraction(len(everything), val_fraction),
            test_fraction if kind == "folder" else 0.0,
        )
        train, validation, made_test = stratified_split(everything, fractions, seed)
        test = made_test if kind == "folder" else test
    dataset = Dataset(layout.root, class_names, train, validation, test, kind, layout.skipped)
    return apply_overlay(dataset, read_overlay(overlay), str(overlay)) if overlay else dataset


def _corrected_split(split: Split, root: Path, overlay: Overlay, class_names: tuple[str, ...]) -> Split:
    relative = tuple(p.relative_to(root).as_posix() for p in split.files)
    pairs = corrected_labels(relative, split.labels, overlay, class_names)
    kept = [(path, new) for path, (_, new) in zip(split.files, pairs) if new is not None]
    return Split(tuple(p for p, _ in kept), tuple(label for _, label in kept))


def apply_overlay(dataset: Dataset, overlay: Overlay, source: str = "the overlay") -> Dataset:
    """``dataset`` with the overlay's relabels and exclusions applied to every split (the photos
    stay where they are); :class:`~clothclf.data.overlay.OverlayError` if the overlay is stale."""
    check_overlay(overlay, dataset.root, dataset.class_names, source)
    splits = {
        name: _corrected_split(dataset.split(name), dataset.root, overlay, dataset.class_names)
        for name in SPLITS
    }
    return dataclasses.replace(dataset, **splits, overlay_digest=overlay.digest())


def dataset_fingerprint(dataset: Dataset) -> str:
    """A content hash of every file (relative path, split, label and bytes): the feature-cache key."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update("\n".join(dataset.class_names).encode())
    for name in SPLITS:
        split = dataset.split(name)
        for path, label in zip(split.files, split.labels):
            digest.update(f"{name}/{label}/{path.relative_to(dataset.root)}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def class_counts(split: Split, num_classes: int) -> list[int]:
    """Number of images of each class in ``split``."""
    counts = Counter(split.labels)
    return [counts.get(i, 0) for i in range(num_classes)]


def class_weights(split: Split, num_classes: int) -> dict[int, float]:
    """Balanced class weights ``n / (k * n_c)`` so rare classes count as much as common ones."""
    counts = class_counts(split, num_classes)
    total = sum(counts)
    present = sum(1 for c in counts if c)
    return {i: (total / (present * c) if c else 0.0) for i, c in enumerate(counts)}


#: Images decoded at a time by :func:`decode_chunks` (64 at 224 pixels: 10 MB).
CHUNK_SIZE = 64


@dataclass(frozen=True)
class DecodedSplit:
    """A split, or a chunk of one, decoded to ``uint8`` pixels; files that could not be read are left out."""

    images: np.ndarray  # (n, size, size, 3) uint8
    labels: np.ndarray  # (n,) int
    files: tuple[Path, ...]
    skipped: tuple[str, ...]


def _try_load(path: Path, size: int) -> np.ndarray | ClothclfError:
    try:
        return load_image(path, size)
    except ClothclfError as exc:
        return exc


def _collect(split: Split, start: int, results: list, image_size: int) -> DecodedSplit:
    """The decoded chunk of ``split`` starting at ``start``, from its per-file results."""
    keep = [i for i, r in enumerate(results) if isinstance(r, np.ndarray)]
    skipped = tuple(str(split.files[start + i]) for i, r in enumerate(results) if isinstance(r, Exception))
    images = (
        np.stack([results[i] for i in keep]) if keep else np.zeros((0, image_size, image_size, 3), np.uint8)
    )
    labels = np.asarray([split.labels[start + i] for i in keep], dtype=np.int32)
    return DecodedSplit(images, labels, tuple(split.files[start + i] for i in keep), skipped)


def decode_chunks(
    split: Split, image_size: int, chunk_size: int = CHUNK_SIZE, workers: int | None = None
) -> Iterator[DecodedSplit]:
    """Decode ``split`` a chunk at a time in parallel threads, the next chunk while the caller works
    on this one, so memory holds two chunks whatever the split's size. Unreadable files are left out
    (listed in each chunk's ``skipped``)."""
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(workers) as pool:

        def submit(start: int) -> list:
            return [pool.submit(_try_load, p, image_size) for p in split.files[start : start + chunk_size]]

        pending = submit(0)
        for start in range(0, len(split), chunk_size):
            results = [future.result() for future in pending]
            pending = submit(start + chunk_size)
            yield _collect(split, start, results, image_size)


def warn_skipped(skipped: Sequence[str]) -> None:
    """One warning listing the files of a split that could not be read (none: no warning)."""
    if skipped:
        log.warning("skipped %d unreadable image(s): %s", len(skipped), ", ".join(skipped))


@dataclass(frozen=True)
class SplitOutputs:
    """What a function (a model, a feature extractor) gave for each readable image of a split."""

    outputs: np.ndarray  # (n, ...) stacked outputs, in file order
    labels: np.ndarray  # (n,) int
    files: tuple[Path, ...]
    skipped: tuple[str, ...]


def map_split(
    split: Split,
    image_size: int,
    fn: Callable[[np.ndarray], np.ndarray],
    chunk_size: int = CHUNK_SIZE,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SplitOutputs:
    """``fn`` over a split's ``uint8`` images, decoded and run a chunk at a time, so memory holds the
    outputs (in one array, filled as the chunks come) and two chunks, never the split's pixels; one
    warning for the unreadable files. ``progress(done, total)`` is called after each chunk (photos)."""
    outputs: np.ndarray | None = None
    labels, files, skipped = [], [], []
    for chunk in decode_chunks(split, image_size, chunk_size, workers):
        if len(chunk.labels):
            result = fn(chunk.images)
            if outputs is None:
                outputs = np.empty((len(split), *result.shape[1:]), result.dtype)
            outputs[len(files) : len(files) + len(result)] = result
        labels.append(chunk.labels)
        files += chunk.files
        skipped += chunk.skipped
        if progress is not None:
            progress(len(files) + len(skipped), len(split))
    warn_skipped(skipped)
    return SplitOutputs(
        outputs[: len(files)] if outputs is not None else np.zeros((0,), np.float32),
        np.concatenate(labels) if labels else np.zeros(0, np.int32),
        tuple(files),
        tuple(skipped),
    )


def decode_split(split: Split, image_size: int, workers: int | None = None) -> DecodedSplit:
    """A whole (small) split decoded into one array, with one warning for unreadable files. Training
    and evaluation never hold a split like this: they use :func:`map_split`."""
    decoded = map_split(split, image_size, lambda images: images, workers=workers)
    images = decoded.outputs if decoded.files else np.zeros((0, image_size, image_size, 3), np.uint8)
    return DecodedSplit(images, decoded.labels, decoded.files, decoded.skipped)
