"""Safe extraction of dataset zips, from the dataset download or from a visitor's upload.

Every entry is checked before anything is written: size, entry count, expansion ratio (zip bombs),
paths that climb out of the destination, symlinks and encryption, two entries with one name, a name
used for a file and a folder. Names are read as UTF-8 when they are valid UTF-8 (macOS's Finder writes
them so without the zip's UTF-8 flag) and normalised to Unicode NFC. Extraction goes to a hidden
sibling folder that is renamed to the destination only when complete, so a failure leaves nothing.
What to use of the extracted files (and what to skip, such as ``__MACOSX/``) is the dataset reader's
choice (:mod:`clothclf.data.layout`), so that every skipped file can be listed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from clothclf.config import MB, Limits
from clothclf.errors import DatasetError, LimitExceededError

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


UTF8_FLAG = 0x800


def entry_name(info: zipfile.ZipInfo) -> str:
    """The entry's name as its maker meant it: UTF-8 when the bytes are valid UTF-8 even without the
    zip's UTF-8 flag (Python reads such names as cp437: ``chemise╠ü``), in Unicode NFC."""
    name = info.filename
    if not info.flag_bits & UTF8_FLAG:
        try:
            name = name.encode("cp437").decode("utf-8")
        except UnicodeError:
            pass  # a real cp437 name (old DOS and Windows tools)
    return unicodedata.normalize("NFC", name)


def _entry_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The path components of an entry, or an error if it could land outside the destination."""
    name = entry_name(info).replace("\\", "/")
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


def _check_names(plan: list[tuple[zipfile.ZipInfo, tuple[str, ...]]]) -> None:
    """Refuse two file entries with one name (the second would overwrite the first) and a name used
    both for a file and for a folder, before anything is written."""
    files: set[tuple[str, ...]] = set()
    folders: set[tuple[str, ...]] = set()
    for info, parts in plan:
        is_dir = info.filename.endswith(("/", "\\"))
        folders.update(parts[:i] for i in range(1, len(parts) + (1 if is_dir else 0)))
        if is_dir:
            continue
        if parts in files:
            raise DatasetError(
                f"the zip holds two files named {'/'.join(parts)!r}; one would overwrite the other, "
                "so make the zip again with one file per name"
            )
        files.add(parts)
    clash = sorted(files & folders)
    if clash:
        raise DatasetError(
            f"the zip holds a file {'/'.join(clash[0])!r} and a folder of the same name; "
            "rename one of them and make the zip again"
        )


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
    plan = [(info, parts) for info in infos if (parts := _check_entry(info, limits))]
    _check_names(plan)
    return plan


def _extract(
    archive: zipfile.ZipFile, plan: list[tuple[zipfile.ZipInfo, tuple[str, ...]]], root: Path
) -> None:
    root = root.resolve()
    for info, parts in plan:
        target = root.joinpath(*parts)
        # Guaranteed by _entry_parts and by never creating links; checked again as the last line of defence.
        if not target.resolve().is_relative_to(root):
            raise DatasetError(f"zip entry {'/'.join(parts)!r} points outside the destination")
        try:
            if info.filename.endswith(("/", "\\")):
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as entry, target.open("wb") as out:
                shutil.copyfileobj(entry, out, CHUNK_BYTES)
        except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise DatasetError(f"zip entry {'/'.join(parts)!r} is damaged ({exc})") from exc
        except OSError as exc:  # strerror only: the hidden staging path means nothing to the user
            raise DatasetError(f"zip entry {'/'.join(parts)!r} cannot be extracted ({exc.strerror})") from exc


def safe_extract_zip(
    source: str | os.PathLike | IO[bytes], dest: Path, limits: Limits = DEFAULT_LIMITS
) -> Path:
    """Extract the zip ``source`` (a path or a binary file object) to the new folder ``dest``.

    Raises :class:`LimitExceededError` when the archive breaks one of ``limits`` (size, entries,
    uncompressed size, expansion ratio) and :class:`DatasetError` when it is not a zip, holds an
    unsafe entry (absolute path, ``..``, symlink, encryption), two entries with one name, or ``dest``
    exists and is not empty. Returns ``dest``.
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


@contextlib.contextmanager
def dataset_folder(path: Path, limits: Limits = DEFAULT_LIMITS) -> Iterator[Path]:
    """``path`` itself if it is a folder; a zip is extracted into a temporary folder, removed afterwards."""
    path = Path(path)
    if path.is_dir() or not zipfile.is_zipfile(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="clothclf-check-") as tmp:
        yield safe_extract_zip(path, Path(tmp) / path.stem, limits)
