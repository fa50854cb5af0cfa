"""Reading a dataset folder the way people make them: which folders are splits, which are classes,
what was skipped and why. Names and files only (no decoding, no TensorFlow).

Understood:

- split folders in any case, with the common aliases (``Train/``, ``training_set/``, ``val/``, ``dev/``,
  ``Test/``, ``test_set/``…), and a split folder wrapped in one of the same name
  (``training_set/training_set/cats``, as the Kaggle cats-vs-dogs zip is made);
- single wrapper folders (``shop-photos/``), descended through; stray files beside them are skipped;
- class names in Unicode NFC, so a folder written by macOS (NFD) and one written elsewhere (NFC) are the
  same class; two folders that differ only by case or Unicode form are refused;
- folders named ``__MACOSX``, ``.hidden`` or ``_private``, hidden files, files that are not photos
  (HEIC and other formats clothclf cannot read are named), each listed in :attr:`Layout.skipped`.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from clothclf.errors import DatasetError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
SPLITS = ("train", "validation", "test")
SPLIT_ALIASES: Mapping[str, tuple[str, ...]] = {
    "train": ("train", "training", "training_set", "train_set", "trainset"),
    "validation": ("validation", "val", "valid", "dev", "validation_set", "val_set", "valid_set"),
    "test": ("test", "testing", "test_set", "testset"),
}
#: Photo formats people bring that clothclf cannot decode, named in the skip reason.
UNREADABLE_PHOTO_FORMATS: Mapping[str, str] = {
    ".heic": "HEIC",
    ".heif": "HEIF",
    ".avif": "AVIF",
    ".dng": "DNG (raw)",
    ".cr2": "CR2 (raw)",
    ".nef": "NEF (raw)",
    ".arw": "ARW (raw)",
    ".psd": "Photoshop",
    ".svg": "SVG",
}
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})
#: The folder holding the photos of a folder-layout dataset, in :attr:`Layout.classes`.
ALL = "all"


@dataclass(frozen=True)
class Skipped:
    """A file or folder the reader did not use, relative to the folder it was given, and why."""

    path: str
    reason: str
    files: int = 1  # files inside a skipped folder

    def to_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason, "files": self.files}


@dataclass(frozen=True)
class Layout:
    """What a dataset folder holds: its root, split -> class name -> photo files, what was skipped."""

    root: Path
    kind: str  # "splits" (split folders of class folders) or "folder" (class folders only)
    classes: Mapping[str, Mapping[str, tuple[Path, ...]]]  # split (or ALL) -> class -> files
    skipped: tuple[Skipped, ...]


def nfc(name: str) -> str:
    """``name`` in Unicode normal form C (what a class is called, however its folder was written)."""
    return unicodedata.normalize("NFC", name)


def split_of(folder_name: str) -> str | None:
    """The split a folder name stands for (case-insensitive, with aliases), or None."""
    key = nfc(folder_name).casefold().replace("-", "_").replace(" ", "_")
    return next((split for split, aliases in SPLIT_ALIASES.items() if key in aliases), None)


def _rel(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def folder_skip_reason(name: str) -> str | None:
    """Why a folder called ``name`` is not read, or None if it is."""
    if name == "__MACOSX":
        return "macOS metadata folder"
    if name.startswith("."):
        return "hidden folder (its name starts with '.')"
    if name.startswith("_"):
        return "its name starts with '_', which marks folders that are not classes"
    return None


def file_skip_reason(name: str) -> str | None:
    """Why a file called ``name`` is not a photo clothclf reads, or None if it is one."""
    suffix = Path(name).suffix.lower()
    if name.startswith("."):
        return "hidden file"
    if name.lower() in SYSTEM_FILES:
        return "system file"
    if suffix in UNREADABLE_PHOTO_FORMATS:
        return (
            f"{UNREADABLE_PHOTO_FORMATS[suffix]} photo: clothclf reads JPEG, PNG, WebP, GIF, BMP "
            "and TIFF; convert it to JPEG"
        )
    if suffix not in IMAGE_EXTENSIONS:
        return f"not a photo ({suffix or 'no extension'})"
    return None


def _loose(path: Path, base: Path, where: str) -> Skipped:
    """A file found where folders were expected."""
    return Skipped(_rel(path, base), file_skip_reason(path.name) or f"not inside a {where} folder")


def _entries(folder: Path) -> tuple[list[Path], list[Path]]:
    """(subfolders, files) of ``folder``, sorted; links to folders count as files (never followed)."""
    try:
        children = sorted(folder.iterdir())
    except OSError as exc:
        raise DatasetError(f"{folder}: cannot be read ({exc.strerror})") from exc
    dirs = [p for p in children if p.is_dir() and not p.is_symlink()]
    return dirs, [p for p in children if p not in dirs]


def _photos(folder: Path, base: Path, skipped: list[Skipped]) -> tuple[Path, ...]:
    """The photos under a class folder (subfolders included), recording what is skipped."""
    photos: list[Path] = []
    dirs, files = _entries(folder)
    for path in files:
        reason = file_skip_reason(path.name) or (None if path.is_file() else "not a regular file")
        if reason:
            skipped.append(Skipped(_rel(path, base), reason))
        else:
            photos.append(path)
    for sub in dirs:
        reason = folder_skip_reason(sub.name)
        if reason:
            skipped.append(Skipped(_rel(sub, base) + "/", reason, _count_files(sub)))
        else:
            photos.extend(_photos(sub, base, skipped))
    return tuple(photos)


def class_folders(folder: Path, base: Path, skipped: list[Skipped]) -> dict[str, tuple[Path, ...]]:
    """Class name (NFC) -> photos for the class folders directly in ``folder``."""
    dirs, files = _entries(folder)
    skipped.extend(_loose(p, base, "class") for p in files)
    classes: dict[str, tuple[Path, ...]] = {}
    for sub in dirs:
        reason = folder_skip_reason(sub.name)
        if reason:
            skipped.append(Skipped(_rel(sub, base) + "/", reason, _count_files(sub)))
            continue
        name = nfc(sub.name)
        if name in classes:
            raise DatasetError(
                f"two class folders in {_rel(folder, base) or 'the dataset'}/ are both named {name!r} "
                "(one written in another Unicode form, as macOS does); merge them into one folder"
            )
        classes[name] = _photos(sub, base, skipped)
    return classes


def _is_wrapper(folder: Path) -> bool:
    """Whether ``folder`` holds folders that hold photos (so it is not itself a class folder)."""
    dirs, _ = _entries(folder)
    return any(folder_skip_reason(d.name) is None and any(p.is_file() for p in d.rglob("*")) for d in dirs)


def find_root(folder: Path) -> tuple[Path, list[Skipped]]:
    """The folder inside ``folder`` that holds the split or class folders, descending through single
    wrapper folders; loose files and skipped folders beside a wrapper are returned as skipped."""
    current, skipped = folder, []
    while True:
        dirs, files = _entries(current)
        visible = [d for d in dirs if folder_skip_reason(d.name) is None]
        if any(split_of(d.name) for d in visible) or len(visible) != 1 or not _is_wrapper(visible[0]):
            return current, skipped
        skipped += [_loose(p, folder, "class") for p in files]
        skipped += [
            Skipped(_rel(d, folder) + "/", folder_skip_reason(d.name) or "", _count_files(d))
            for d in dirs
            if d not in visible
        ]
        current = visible[0]


def _split_folders(root: Path, base: Path, skipped: list[Skipped]) -> dict[str, Path]:
    """Split name -> folder for the split folders in ``root``; other entries are skipped."""
    found: dict[str, list[Path]] = {}
    dirs, files = _entries(root)
    skipped.extend(_loose(p, base, "split") for p in files)
    for sub in dirs:
        split = split_of(sub.name) if folder_skip_reason(sub.name) is None else None
        if split:
            found.setdefault(split, []).append(sub)
        else:
            reason = folder_skip_reason(sub.name) or "not a split folder (train, validation or test)"
            skipped.append(Skipped(_rel(sub, base) + "/", reason, _count_files(sub)))
    for split, folders in found.items():
        if len(folders) > 1:
            names = " and ".join(f"{p.name}/" for p in folders)
            raise DatasetError(f"the dataset has two folders for its {split} split, {names}; keep one")
    if "train" not in found:
        names = ", ".join(f"{p[0].name}/" for p in found.values())
        raise DatasetError(
            f"the dataset has {names} but no training folder (train/, training/ or training_set/)"
        )
    return {split: _unwrap(folders[0], split) for split, folders in found.items()}


def _unwrap(folder: Path, split: str) -> Path:
    """``training_set/training_set/`` -> the inner folder, when it is the only thing inside."""
    dirs, files = _entries(folder)
    visible = [d for d in dirs if folder_skip_reason(d.name) is None]
    if len(visible) == 1 and not files and split_of(visible[0].name) == split:
        return visible[0]
    return folder


def check_class_names(names: Iterable[str]) -> None:
    """Refuse class names that differ only by upper/lower case (``shirt`` and ``Shirt``)."""
    by_key: dict[str, set[str]] = {}
    for name in names:
        by_key.setdefault(name.casefold(), set()).add(name)
    clashes = [sorted(spellings) for spellings in by_key.values() if len(spellings) > 1]
    if clashes:
        pairs = "; ".join(" and ".join(repr(n) for n in group) for group in clashes)
        raise DatasetError(
            f"class folders {pairs} differ only by upper/lower case, so they would be two classes "
            "that look the same; rename or merge them"
        )


def read_layout(folder: str | Path) -> Layout:
    """Read ``folder`` as a dataset: see the module docstring. Raises :class:`DatasetError` for a layout
    that cannot be read one way only (two folders for one split or one class, case clashes)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such dataset folder")
    folder = folder.resolve()  # the root and every file under it, through the same links
    root, skipped = find_root(folder)
    dirs, _ = _entries(root)
    if any(split_of(d.name) and folder_skip_reason(d.name) is None for d in dirs):
        split_dirs = _split_folders(root, folder, skipped)
        classes = {split: class_folders(path, folder, skipped) for split, path in split_dirs.items()}
        kind = "splits"
    else:
        classes, kind = {ALL: class_folders(root, folder, skipped)}, "folder"
    check_class_names({name for by_class in classes.values() for name in by_class})
    return Layout(root, kind, classes, tuple(skipped))
