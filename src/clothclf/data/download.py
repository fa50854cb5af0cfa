"""Download the default dataset: clothing-dataset-small (CC0, 10 classes, train/validation/test).

The archive is streamed to a hidden work folder inside the destination, extracted with
:func:`clothclf.data.archives.safe_extract_zip`, checked with :func:`clothclf.data.datasets.create_dataset`
and renamed into place, so the dataset folder is either complete or absent.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from clothclf import __version__
from clothclf.config import DATASET_NAME, Limits, Paths
from clothclf.data.archives import safe_extract_zip
from clothclf.data.datasets import create_dataset
from clothclf.data.layout import read_layout
from clothclf.errors import DatasetError

DATASET_URL = "https://github.com/alexeygrigorev/clothing-dataset-small/archive/refs/heads/master.zip"
#: The real archive is about 100 MB with about 3,800 entries of JPEGs; these limits leave ample room.
DATASET_LIMITS = Limits(max_zip_mb=1024, max_zip_uncompressed_mb=2048, max_zip_entries=50_000)
CHUNK_BYTES = 256 * 1024

ProgressCallback = Callable[[int, int | None], None]


def check_dataset(root: Path) -> None:
    """Raise :class:`DatasetError` unless ``root`` is a dataset of split folders that can train."""
    if create_dataset(root).layout == "folder":
        raise DatasetError(f"{root}: no train/ folder (expected train/, validation/ and test/)")


def _fetch(url: str, path: Path, progress: ProgressCallback | None, timeout: float) -> None:
    """Stream ``url`` to ``path``, reporting ``(bytes_done, total)``; any failure is a DatasetError."""
    done, total = 0, None
    try:
        request = urllib.request.Request(url, headers={"User-Agent": f"clothclf/{__version__}"})
        with urllib.request.urlopen(request, timeout=timeout) as response, path.open("wb") as out:
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
            if progress:
                progress(done, total)
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    except urllib.error.HTTPError as exc:
        raise DatasetError(f"could not download {url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DatasetError(f"could not download {url}: {_network_problem(url, exc.reason)}") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DatasetError(f"could not download {url}: {str(exc) or type(exc).__name__}") from exc
    if total is not None and done != total:
        raise DatasetError(
            f"could not download {url}: the connection closed after {done:,} of {total:,} bytes"
        )


def _network_problem(url: str, reason: object) -> str:
    """Why a connection to ``url`` failed, in words (not ``[Errno -2] Name or service not known``)."""
    host = urllib.parse.urlsplit(url).hostname or url
    if isinstance(reason, socket.gaierror):
        return f"{host} could not be reached: its name could not be resolved (is this machine offline?)"
    if isinstance(reason, TimeoutError):
        return f"{host} did not answer in time"
    if isinstance(reason, ConnectionRefusedError):
        return f"{host} refused the connection"
    if isinstance(reason, OSError) and reason.strerror:
        return f"{host} could not be reached: {reason.strerror}"
    return str(reason)


def _move_into_place(source: Path, target: Path, work: Path) -> None:
    """Rename ``source`` to ``target``; an existing ``target`` is moved into ``work`` (deleted with it)."""
    if target.exists():
        target.rename(work / "previous")
    try:
        source.rename(target)
    except OSError:
        if (work / "previous").exists():
            (work / "previous").rename(target)
        raise


def download_dataset(
    dest: Path | None = None,
    *,
    url: str = DATASET_URL,
    progress: ProgressCallback | None = None,
    force: bool = False,
    timeout: float = 60,
) -> Path:
    """Download and extract the dataset to ``dest / "clothing-dataset-small"`` and return that folder.

    ``dest`` defaults to ``Paths.from_env().data_dir``. If a valid dataset is already there it is
    returned without network access, unless ``force``. ``progress(bytes_done, total)`` is called
    while downloading (``total`` is None when the server does not say). Raises :class:`DatasetError`
    on any failure, leaving no partial folder or temporary file behind.
    """
    dest = Path(dest) if dest is not None else Paths.from_env().data_dir
    target = dest / DATASET_NAME
    if target.exists() and not force:
        try:
            check_dataset(target)
        except DatasetError as exc:
            raise DatasetError(
                f"{target} exists but is not a complete dataset ({exc}); remove it or download with force"
            ) from exc
        return target
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{DATASET_NAME}.", suffix=".download", dir=dest))
    try:
        archive = work / "archive.zip"
        _fetch(url, archive, progress, timeout)
        try:
            root = read_layout(safe_extract_zip(archive, work / "extracted", DATASET_LIMITS)).root
            check_dataset(root)
        except DatasetError as exc:
            raise DatasetError(f"the archive downloaded from {url} is not a usable dataset: {exc}") from exc
        _move_into_place(root, target, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


@contextmanager
def tqdm_progress(description: str) -> Iterator[ProgressCallback]:
    """A progress callback that draws a tqdm bar of bytes, from its first call to the last byte."""
    bars: list[tqdm] = []

    def update(done: int, total: int | None) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024))
        bars[0].update(done - bars[0].n)
        if total is not None and done >= total:
            bars[0].close()  # the download is complete; do not count extraction time in its rate

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


def download_with_progress_bar(
    dest: Path | None = None, *, url: str = DATASET_URL, force: bool = False
) -> Path:
    """:func:`download_dataset` with a tqdm progress bar on stderr, for the command line."""
    with tqdm_progress(f"downloading {DATASET_NAME}") as progress:
        return download_dataset(dest, url=url, progress=progress, force=force)
