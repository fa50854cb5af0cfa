"""The data a Fine-tune run trains on: an uploaded dataset zip extracted once per content into an
app-owned folder, checked (the dataset report), and deleted when it is refused or its run has ended.

Uploads live in ``<runs_dir>/.uploads/<content digest>/``, never inside a dataset folder
(``CLOTHCLF_DATA_DIR`` may be the user's own dataset). The same zip again (Check, then Start, or Start
pressed twice) reuses its folder. A refused upload is deleted at once; a run's upload when the run
has ended (finished, failed or cancelled); uploads that were checked but never trained on are kept
up to :attr:`~clothclf.config.Limits.max_kept_uploads_mb`, the least recently used deleted first.
No TensorFlow, no Streamlit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import IO

from clothclf.config import MB, Limits, Paths, TrainConfig
from clothclf.data.archives import DEFAULT_LIMITS, safe_extract_zip
from clothclf.data.report import DatasetReport, training_report
from clothclf.errors import DatasetError

#: Extracted dataset zips live here, under the runs folder (never in a dataset folder), one per content.
UPLOADS_DIR = ".uploads"


def uploads_dir(paths: Paths) -> Path:
    """Where uploaded dataset zips are extracted: ``<runs_dir>/.uploads/<content digest>/``."""
    return paths.runs_dir / UPLOADS_DIR


def _digest(source: IO[bytes]) -> str:
    """A content hash of the whole upload (read in chunks; the position is restored)."""
    position = source.tell()
    source.seek(0)
    digest = hashlib.blake2b(digest_size=16)
    for chunk in iter(lambda: source.read(MB), b""):
        digest.update(chunk)
    source.seek(position)
    return digest.hexdigest()


def extract_uploaded_dataset(
    source: IO[bytes], paths: Paths, limits: Limits = DEFAULT_LIMITS, in_use: str | Path | None = None
) -> Path:
    """Extract an uploaded dataset zip once per content into ``<runs_dir>/.uploads/<digest>`` and
    return that folder (the dataset reader finds the dataset inside). The same zip again reuses it.
    Older uploads are pruned to the limit, except the one ``in_use`` is in (a running job's dataset).
    :class:`~clothclf.errors.DatasetError` (nothing kept) for an unsafe or broken zip,
    :class:`~clothclf.errors.LimitExceededError` if it breaks ``limits``."""
    folder = uploads_dir(paths) / _digest(source)
    if folder.is_dir():
        os.utime(folder)  # most recently used: pruned last
        return folder
    prune_uploads(paths, limits.max_kept_uploads_mb * MB, in_use=in_use)
    try:
        return safe_extract_zip(source, folder, limits)
    except OSError as exc:
        raise DatasetError(f"cannot extract the upload ({exc.strerror})") from exc


def upload_folder(data_dir: str | Path, paths: Paths) -> Path | None:
    """The extracted upload that ``data_dir`` is in, or None if it is not an upload."""
    uploads = uploads_dir(paths).resolve()
    path = Path(data_dir).resolve()
    if not path.is_relative_to(uploads) or path == uploads:
        return None
    return uploads / path.relative_to(uploads).parts[0]


def discard_upload(data_dir: str | Path, paths: Paths) -> None:
    """Delete the extracted upload ``data_dir`` is in (a refused dataset); nothing if it is not one."""
    folder = upload_folder(data_dir, paths)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def prune_uploads(paths: Paths, keep_bytes: int, in_use: str | Path | None = None) -> list[Path]:
    """Delete the least recently used extracted uploads until the rest take at most ``keep_bytes``;
    the one ``in_use`` (a running job's dataset folder) stays. Returns the folders deleted."""
    keep = upload_folder(in_use, paths) if in_use else None
    try:
        folders = [p for p in uploads_dir(paths).iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    folders.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    sizes = {p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in folders}
    total, deleted = sum(sizes.values()), []
    for folder in reversed(folders):
        if total <= keep_bytes:
            break
        if keep is not None and folder.resolve() == keep:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        total -= sizes[folder]
        deleted.append(folder)
    return deleted


def training_data_dir(
    upload: IO[bytes] | None,
    paths: Paths,
    limits: Limits = DEFAULT_LIMITS,
    in_use: str | Path | None = None,
) -> Path:
    """The folder a Fine-tune run reads: the uploaded zip, extracted once per content, else the default
    dataset (:class:`DatasetError` if it is not on this server). ``in_use``: the running job's dataset
    folder (:func:`clothclf.app.jobs.active_data_dir`), whose upload is never pruned."""
    if upload is not None:
        return extract_uploaded_dataset(upload, paths, limits, in_use)
    folder = paths.default_dataset_dir
    if not folder.is_dir():
        raise DatasetError(
            f"the default dataset is not on this server ({folder}); upload a zip of class folders"
        )
    return folder


def check_training_data(config: TrainConfig, paths: Paths) -> DatasetReport:
    """The report of the dataset ``config`` trains on (cached by content). A dataset that cannot
    train raises :class:`DatasetError` (refused by the reader) or comes back with ``problems``; either
    way an uploaded one is deleted."""
    try:
        report = training_report(config, paths.cache_dir)
    except DatasetError:
        discard_upload(config.data_dir, paths)
        raise
    if not report.ok:
        discard_upload(config.data_dir, paths)
    return report
