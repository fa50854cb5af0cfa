"""Safe extraction of dataset zips, from the dataset download or from a visitor's upload.

Every entry is checked before anything is written: size, entry count, expansion ratio (zip bombs),
paths that climb out of the destination, symlinks and encryption. Extraction goes to a hidden
sibling folder that is renamed to the destination only when complete, so a failure leaves nothing.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from clothclf.config import Limits
from clothclf.data.datasets import IMAGE_EXTENSIONS
from clothclf.errors import DatasetError, LimitExceededError

MB = 1024 * 1024
#: Entries smaller than this are not ratio-checked: tiny text files can compress very well.
RATIO_CHECK_MIN_BYTES = 64 * 1024
#: Deflate decompresses in bounded chunks; bzip2 and lzma may not, so they are refused.
SUPPORTED_COMPRESSION = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
CHUNK_BYTES = MB
DEFAULT_LIMITS = Limits()


def _describe(source: str | os.PathLike | IO[bytes]) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else "the archive"


def _archive_size(source: str | os.PathLike | IO[bytes]) -> int:
    if isinstance(source, (str, os.PathLike)):
        try:
            return Path(source).stat().st_size
        except OSError as exc:
            raise DatasetError(f"{source}: cannot read the archive ({exc.strerror})") from exc
    try:
        position = source.tell()
        size = source.seek(0, os.SEEK_END)
        source.seek(position)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{_describe(source)}: cannot read the archive ({exc})") from exc
    return size


def _entry_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The path components of an entry, or an error if it could land outside the destination."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    drive = bool(parts) and len(parts[0]) >= 2 and parts[0][0].isalpha() and parts[0][1] == ":"
    if name.startswith("/") or drive:
        raise DatasetError(f"zip entry {info.filename!r} has an absolute path")
    if ".." in parts:
        raise DatasetError(f"zip entry {info.filename!r} points outside the archive ('..')")
    return parts


def _check_entry(info: zipfile.ZipInfo, limits: Limits) -> tuple[str, ...]:
    parts = _entry_parts(info)
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DatasetError(f"zip entry {info.filename!r} is a symbolic link; links are not allowed")
    if info.flag_bits & 0x1:
        raise DatasetError(f"zip entry {info.filename!r} is encrypted; encrypted zips are not supported")
    if info.compress_type not in SUPPORTED_COMPRESSION:
        raise DatasetError(
            f"zip entry {info.filename!r} uses compression method {info.compress_type}; "
            "only stored and deflate entries are supported"
        )
    if info.file_size >= RATIO_CHECK_MIN_BYTES:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_zip_ratio:
            raise LimitExceededError(
                f"zip entry {info.filename!r} expands {ratio:,.0f} times, over the limit of "
                f"{limits.max_zip_ratio:g} (max_zip_ratio): it looks like a zip bomb"
            )
    return parts


def _is_skipped(parts: tuple[str, ...]) -> bool:
    """macOS resource forks and hidden files or folders (``.DS_Store``, ``.git/``) are not extracted."""
    return not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


def _plan(archive: zipfile.ZipFile, limits: Limits) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """Check every entry against ``limits``; return the entries to extract with their path parts."""
    infos = archive.infolist()
    if len(infos) > limits.max_zip_entries:
        raise LimitExceededError(
            f"the zip holds {len(infos):,} entries, over the limit of {limits.max_zip_entries:,} (max_zip_entries)"
        )
    total = sum(info.file_size for info in infos)
    if total > limits.max_zip_uncompressed_mb * MB:
        raise LimitExceededError(
            f"the zip expands to {total / MB:,.1f} MB, over the limit of "
            f"{limits.max_zip_uncompressed_mb:,} MB (max_zip_uncompressed_mb)"
        )
    checked = [(info, _check_entry(info, limits)) for info in infos]
    return [(info, parts) for info, parts in checked if not _is_skipped(parts)]


def _extract(
    archive: zipfile.ZipFile, plan: list[tuple[zipfile.ZipInfo, tuple[str, ...]]], root: Path
) -> None:
    root = root.resolve()
    for info, parts in plan:
        target = root.joinpath(*parts)
        # Guaranteed by _entry_parts and by never creating links; checked again as the last line of defence.
        if not target.resolve().is_relative_to(root):
            raise DatasetError(f"zip entry {info.filename!r} points outside the destination")
        try:
            if info.filename.endswith(("/", "\\")):
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as entry, target.open("wb") as out:
                shutil.copyfileobj(entry, out, CHUNK_BYTES)
        except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise DatasetError(f"zip entry {info.filename!r} is damaged ({exc})") from exc
        except OSError as exc:
            raise DatasetError(f"zip entry {info.filename!r} cannot be extracted ({exc})") from exc


def safe_extract_zip(
    source: str | os.PathLike | IO[bytes], dest: Path, limits: Limits = DEFAULT_LIMITS
) -> Path:
    """Extract the zip ``source`` (a path or a binary file object) to the new folder ``dest``.

    Raises :class:`LimitExceededError` when the archive breaks one of ``limits`` (size, entries,
    uncompressed size, expansion ratio) and :class:`DatasetError` when it is not a zip, holds an
    unsafe entry (absolute path, ``..``, symlink, encryption) or ``dest`` exists and is not empty.
    ``__MACOSX/`` and hidden files are skipped. Returns ``dest``.
    """
    dest = Path(dest)
    name = _describe(source)
    size = _archive_size(source)
    if size > limits.max_zip_mb * MB:
        raise LimitExceededError(
            f"{name}: {size / MB:,.1f} MB is over the limit of {limits.max_zip_mb:,} MB (max_zip_mb)"
        )
    if (dest.is_dir() and any(dest.iterdir())) or (dest.exists() and not dest.is_dir()):
        raise DatasetError(f"{dest} already exists; choose a new folder to extract {name} into")
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DatasetError(f"{name}: not a zip file") from exc
    with archive:
        plan = _plan(archive, limits)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
        try:
            _extract(archive, plan, staging)
            if dest.is_dir():
                dest.rmdir()
            staging.rename(dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return dest


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _holds_images(folder: Path, recursive: bool) -> bool:
    files = folder.rglob("*") if recursive else folder.iterdir()
    return any(
        p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file() for p in files
    )


def find_dataset_root(folder: Path) -> Path:
    """The folder inside ``folder`` that holds ``train/`` or the class folders.

    Single wrapper folders (such as ``clothing-dataset-small-master/``) are descended through.
    Raises :class:`DatasetError` if no class folders with images are found.
    """
    current = Path(folder)
    if not current.is_dir():
        raise DatasetError(f"{current}: no such folder")
    while not (current / "train").is_dir():
        subdirs = _visible_dirs(current)
        if len(subdirs) != 1 or _holds_images(subdirs[0], recursive=False):
            break
        current = subdirs[0]
    if (current / "train").is_dir() or any(_holds_images(d, recursive=True) for d in _visible_dirs(current)):
        return current
    raise DatasetError("no class folders found: a dataset zip must hold one folder of images per class")
