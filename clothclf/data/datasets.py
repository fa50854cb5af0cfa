"""Folder datasets: discover classes and files, split deterministically, fingerprint content.

A dataset root holds ``train/``, ``validation/`` and ``test/`` folders of class subfolders, or is a
single folder of class subfolders, which :func:`create_dataset` splits (stratified, seeded). No
TensorFlow here: the tf.data side lives in :mod:`clothclf.data.pipeline`.
"""

from __future__ import annotations

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
from clothclf.errors import ClothclfError, DatasetError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Split:
    """The files of one split with their integer labels (indices into the dataset's class names)."""

    files: tuple[Path, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.files)


@dataclass(frozen=True)
class Dataset:
    """A resolved dataset: class names, the three splits, and how they were made."""

    root: Path
    class_names: tuple[str, ...]
    train: Split
    validation: Split
    test: Split
    layout: str  # "splits" (train/validation/test folders) or "folder" (split here, seeded)

    def split(self, name: str) -> Split:
        """The split called ``name`` (train, validation or test)."""
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def split_record(self) -> dict[str, list[str]]:
        """Relative file paths of every split, to store with a run so the split can be reproduced."""
        return {name: [str(p.relative_to(self.root)) for p in self.split(name).files] for name in SPLITS}


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def scan_class_folder(
    folder: str | Path, class_names: tuple[str, ...] | None = None
) -> tuple[tuple[str, ...], Split]:
    """Files and labels of a folder of class subfolders.

    With ``class_names`` given, labels index into it and a subfolder not in it is an error;
    otherwise the class names are the sorted subfolder names that hold at least one image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    by_class = {d.name: sorted(p for p in d.rglob("*") if _is_image(p)) for d in _class_dirs(folder)}
    by_class = {name: files for name, files in by_class.items() if files}
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
    files: list[Path] = []
    labels: list[int] = []
    for name in sorted(by_class):
        files.extend(by_class[name])
        labels.extend([class_names.index(name)] * len(by_class[name]))
    return class_names, Split(tuple(files), tuple(labels))


def stratified_split(split: Split, fractions: tuple[float, float], seed: int) -> tuple[Split, Split, Split]:
    """Split into (train, validation, test) by class, with the given validation/test fractions."""
    rng = random.Random(seed)
    parts: list[list[tuple[Path, int]]] = [[], [], []]
    by_label: dict[int, list[Path]] = {}
    for path, label in zip(split.files, split.labels):
        by_label.setdefault(label, []).append(path)
    for label in sorted(by_label):
        files = sorted(by_label[label])
        rng.shuffle(files)
        n_val = round(len(files) * fractions[0]) if len(files) > 2 else 0
        n_test = round(len(files) * fractions[1]) if len(files) > 2 else 0
        parts[1] += [(p, label) for p in files[:n_val]]
        parts[2] += [(p, label) for p in files[n_val : n_val + n_test]]
        parts[0] += [(p, label) for p in files[n_val + n_test :]]

    def to_split(pairs: list[tuple[Path, int]]) -> Split:
        pairs = sorted(pairs)
        return Split(tuple(p for p, _ in pairs), tuple(label for _, label in pairs))

    return to_split(parts[0]), to_split(parts[1]), to_split(parts[2])


def create_dataset(
    root: str | Path, seed: int = 42, val_fraction: float = 0.1, test_fraction: float = 0.1
) -> Dataset:
    """Resolve a dataset folder (either layout) into a :class:`Dataset`."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    if (root / "train").is_dir():
        class_names, train = scan_class_folder(root / "train")
        splits = [train]
        for name in SPLITS[1:]:
            folder = root / name
            splits.append(scan_class_folder(folder, class_names)[1] if folder.is_dir() else Split((), ()))
        if not len(splits[1]):
            raise DatasetError(f"{root}: has train/ but no validation/ folder with images")
        return Dataset(root, class_names, *splits, layout="splits")
    class_names, everything = scan_class_folder(root)
    if len(class_names) < 2:
        raise DatasetError(f"{root}: a dataset needs at least two class folders")
    train, validation, test = stratified_split(everything, (val_fraction, test_fraction), seed)
    if not len(validation):
        raise DatasetError(f"{root}: too few images to hold out a validation split")
    return Dataset(root, class_names, train, validation, test, layout="folder")


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
) -> SplitOutputs:
    """``fn`` over a split's ``uint8`` images, decoded and run a chunk at a time, so memory holds the
    outputs (in one array, filled as the chunks come) and two chunks, never the split's pixels; one
    warning for the unreadable files."""
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
