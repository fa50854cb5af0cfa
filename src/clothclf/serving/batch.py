"""Classifying a catalog: photos from folders, path lists or object storage, streamed, one row each.

:func:`predict_catalog` is what ``clothclf predict`` runs. Paths are expanded lazily (folders
recursively, image extensions only, hidden files and folders skipped) and classified by
:meth:`~clothclf.serving.classifier.Classifier.predict_stream` (decoding overlapped with LiteRT, bounded memory)
or, with ``engine="ray"``, by Ray Data actors (:mod:`clothclf.serving.ray_engine`). Rows (one a photo,
:mod:`clothclf.serving.rows`) go to a result file as they come (:mod:`clothclf.serving.result_files`), so a
killed run can be resumed.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from clothclf.console import counted
from clothclf.data.datasets import IMAGE_EXTENSIONS
from clothclf.errors import ClothclfError
from clothclf.serving.classifier import load_classifier
from clothclf.serving.result_files import ResultFile, open_result_file
from clothclf.serving.rows import classify_files, is_uri, prediction_row

#: The catalog API (``prediction_row`` and ``classify_files`` are defined in :mod:`clothclf.serving.rows`).
__all__ = [
    "ENGINES",
    "CatalogSummary",
    "ProgressLine",
    "catalog_files",
    "classify_files",
    "expand_paths",
    "is_uri",
    "predict_catalog",
    "prediction_row",
    "read_path_list",
]

ENGINES = ("local", "ray")


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk_folder(folder: str) -> Iterator[str]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield from (os.path.join(root, name) for name in sorted(files) if _is_image_name(name))


def _walk_uri(uri: str) -> Iterator[str]:
    """The photos under a URI prefix (a file URI yields itself), through pyarrow's filesystems."""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    if filesystem.get_file_info(path).type != fs.FileType.Directory:
        yield uri
        return
    scheme = uri.split("://", 1)[0]
    infos = filesystem.get_file_info(fs.FileSelector(path, recursive=True))
    for info in sorted(infos, key=lambda i: _walk_order(i.path)):
        hidden = any(part.startswith(".") for part in info.path[len(path) :].split("/"))
        if info.type == fs.FileType.File and not hidden and _is_image_name(info.base_name):
            yield f"{scheme}://{info.path}" if scheme != "file" else f"file://{info.path}"


def _walk_order(path: str) -> tuple:
    """Sort key giving :func:`os.walk`'s order: a folder's files first, then its subfolders, each sorted."""
    *folders, name = path.split("/")
    return (*((1, folder) for folder in folders), (0, name))


def expand_paths(paths: Iterable[str | os.PathLike]) -> Iterator[str]:
    """Files as given, folders (and URI prefixes) as their photos in sorted order, lazily.

    A path that does not exist is yielded as it is, so it becomes an error row rather than vanishing.
    """
    for path in map(os.fspath, paths):
        if is_uri(path):
            yield from _walk_uri(path)
        elif os.path.isdir(path):
            yield from _walk_folder(path)
        else:
            yield path


def read_path_list(list_file: str | os.PathLike) -> Iterator[str]:
    """One path per line of ``list_file`` (``-``: standard input); blank lines skipped."""
    if os.fspath(list_file) == "-":
        yield from (line.rstrip("\r\n") for line in sys.stdin if line.strip())
        return
    try:
        with open(list_file, encoding="utf-8", errors="surrogateescape") as f:
            yield from (line.rstrip("\r\n") for line in f if line.strip())
    except OSError as exc:
        raise ClothclfError(f"{list_file}: cannot read the list of paths ({exc.strerror})") from exc


@dataclass(frozen=True)
class CatalogSummary:
    """What a batch run did: photos classified, failed and skipped (already in the output), and its time."""

    classified: int
    failed: int
    skipped: int
    seconds: float

    @property
    def photos_per_s(self) -> float:
        """Photos classified or failed per second of the run."""
        return (self.classified + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One line for people: counts, time and rate."""
        done = self.classified + self.failed
        skipped = f", {self.skipped} skipped (already in the output)" if self.skipped else ""
        return (
            f"{counted(done, 'photo')} in {self.seconds:.1f} s ({self.photos_per_s:.1f} photos/s): "
            f"{self.classified} classified, {self.failed} failed{skipped}"
        )


def catalog_files(
    paths: Iterable[str | os.PathLike] = (), path_list: str | os.PathLike | None = None
) -> Iterator[str]:
    """Every photo named by ``paths`` and by the lines of ``path_list``, folders expanded."""
    yield from expand_paths(paths)
    if path_list is not None:
        yield from expand_paths(read_path_list(path_list))


def _rows(
    files: Iterable[str], model_dir, backend: str, top_k: int, engine: str, ray_address
) -> Iterator[dict]:
    if engine == "ray":
        from clothclf.serving.ray_engine import ray_rows

        return ray_rows(files, model_dir, backend=backend, top_k=top_k, address=ray_address)
    return classify_files(load_classifier(model_dir, backend=backend), files, top_k)


def predict_catalog(
    paths: Iterable[str | os.PathLike],
    out: str | os.PathLike | ResultFile,
    *,
    path_list: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    backend: str = "auto",
    top_k: int = 3,
    resume: bool = False,
    engine: str = "local",
    ray_address: str | None = None,
    progress: bool = False,
) -> CatalogSummary:
    """Classify every photo of ``paths`` (and of ``path_list``) and write a row for each to ``out``.

    ``out`` is a ``.csv``, ``.jsonl`` or ``.parquet`` path (see :mod:`clothclf.serving.result_files`) or an open
    :class:`ResultFile`. ``model_dir`` and ``backend`` are :func:`load_classifier`'s. With ``resume`` the
    photos already in ``out`` are skipped. ``engine="ray"``
    runs on Ray Data (``ray_address``: an existing cluster; default ``RAY_ADDRESS`` or a local one).
    ``progress`` draws a bar with the rate and time left on standard error.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    sink = out if hasattr(out, "write") else open_result_file(out, resume)
    skipped = 0
    done = {os.path.abspath(file) for file in sink.done}  # "photos/a.jpg" and "/shop/photos/a.jpg" alike

    def todo(files: Iterable[str]) -> Iterator[str]:
        nonlocal skipped
        for file in files:
            if os.path.abspath(file) in done:
                skipped += 1
            else:
                yield file

    total = _count(todo, paths, path_list) if progress else None
    skipped, counts, start = 0, {"classified": 0, "failed": 0}, time.perf_counter()
    bar = ProgressLine(total) if progress else None
    try:
        for row in _rows(
            todo(catalog_files(paths, path_list)), model_dir, backend, top_k, engine, ray_address
        ):
            sink.write(row)
            counts["failed" if "error" in row else "classified"] += 1
            if bar is not None:
                bar.update()
    finally:
        sink.close()
        if bar is not None:
            bar.close()
    return CatalogSummary(counts["classified"], counts["failed"], skipped, time.perf_counter() - start)


def _count(todo, paths, path_list) -> int | None:
    """How many photos are left to do (a first pass over the paths), or None if the list is standard input."""
    if path_list is not None and os.fspath(path_list) == "-":
        return None
    return sum(1 for _ in todo(catalog_files(paths, path_list)))


class ProgressLine:
    """A one-line progress report on standard error (photos, rate, time left), redrawn at most twice a second."""

    def __init__(self, total: int | None, stream: IO[str] | None = None):
        self._total, self._stream = total, stream or sys.stderr
        self._done, self._start, self._drawn = 0, time.perf_counter(), 0.0

    def update(self) -> None:
        self._done += 1
        now = time.perf_counter()
        if now - self._drawn >= 0.5 or self._done == self._total:
            self._drawn = now
            self._stream.write("\r" + self.text(now - self._start))
            self._stream.flush()

    def text(self, seconds: float) -> str:
        """``done/total photos, rate photos/s, ETA m:ss`` (no total: no ETA)."""
        rate = self._done / seconds if seconds > 0 else 0.0
        if self._total is None:
            return f"{counted(self._done, 'photo')}  {rate:.1f} photos/s"
        left = (self._total - self._done) / rate if rate > 0 else 0.0
        percent = 100 * self._done / self._total if self._total else 100.0
        return f"{self._done}/{self._total} photos ({percent:.0f}%)  {rate:.1f} photos/s  ETA {left // 60:.0f}:{left % 60:02.0f}"

    def close(self) -> None:
        self._stream.write("\n")
        self._stream.flush()
