"""Files of batch predictions: one row per photo in CSV, JSON lines or Parquet, written as the rows come.

A row is ``{"file": ..., **Prediction.to_dict()}`` or ``{"file": ..., "error": ...}``. CSV and JSON-lines
rows are flushed one by one, so a killed run keeps every row it wrote; resuming first cuts off a torn
last line, then skips the files already there. Parquet cannot be appended to, so its rows go to a
JSON-lines journal beside it (``.NAME.partial.jsonl``) and the Parquet file is rewritten, atomically,
with the old rows and the journal's when the run ends.

JSON (``clothclf predict --json`` lines and ``.jsonl`` files) is strict UTF-8 JSON that any reader takes.
A file name whose bytes are not UTF-8 (Linux allows any bytes but ``/``) is written with U+FFFD in
place of each such byte, and ``file_bytes_base64`` holds its exact bytes (base64); other text is written
the same way. Names that are UTF-8 are written as they are, without ``file_bytes_base64``. CSV files
keep the name's bytes as they are; Parquet text (UTF-8 only) escapes them as ``\xe9``.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Protocol

from clothclf.errors import ClothclfError
from clothclf.runs import atomic_path

SUFFIXES = (".csv", ".jsonl", ".parquet")
#: The answer's columns, in order: what :meth:`Prediction.to_dict` gives (every class's probability is
#: left out: ``top_k`` has the useful ones).
ANSWER_COLUMNS = ("label", "closest", "confidence", "status", "ood_score", "top_k")
# File names may hold bytes that are not UTF-8 (os.fsdecode gives surrogates): write them back as they were.
_TEXT = {"encoding": "utf-8", "errors": "surrogateescape"}
#: The field of a JSON row that holds the exact bytes (base64) of a file name that is not UTF-8.
FILE_BYTES = "file_bytes_base64"


def _bytes_of(text: str) -> bytes:
    """The bytes ``text`` was decoded from by ``os.fsdecode`` (any other lone surrogate as ``?``)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _valid_text(text: str) -> str:
    """``text`` with each byte that was not UTF-8 (a lone surrogate from ``os.fsdecode``) as U+FFFD."""
    return _bytes_of(text).decode("utf-8", "replace")


def json_line(row: dict) -> str:
    """A row as one line of strict JSON (see the module docstring): never a lone surrogate."""
    safe = {key: _valid_text(value) if isinstance(value, str) else value for key, value in row.items()}
    name = row.get("file")
    if isinstance(name, str) and safe["file"] != name:
        safe[FILE_BYTES] = base64.b64encode(_bytes_of(name)).decode("ascii")
    return json.dumps(safe)


def row_of_json(line: str) -> dict:
    """A row written by :func:`json_line`, with its file name as the bytes it had (``os.fsdecode``)."""
    row = json.loads(line)
    if FILE_BYTES in row:
        row["file"] = os.fsdecode(base64.b64decode(row.pop(FILE_BYTES)))
    return row


def columns() -> tuple[str, ...]:
    """The columns of every CSV or Parquet file of answers (the CLI's and the app's): the photo, the
    answer (``label`` is a class or ``unknown``, ``closest`` the most probable class), the error."""
    return ("file", *ANSWER_COLUMNS, "error")


def csv_cells(row: dict) -> dict:
    """A row as the CSV writer takes it: every column of :func:`columns`, lists as JSON, None empty."""
    return {name: _flat(row.get(name)) for name in columns()}


def csv_text(rows: Iterable[dict]) -> str:
    """Rows as the text of a CSV file, exactly as :func:`open_result_file` writes them."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns())
    writer.writeheader()
    writer.writerows(csv_cells(row) for row in rows)
    return buffer.getvalue()


class ResultFile(Protocol):
    """Where rows go: ``done`` are the files already written (when resuming)."""

    done: set[str]

    def write(self, row: dict) -> None: ...

    def close(self) -> None: ...


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line without its newline (a run killed in the middle of a write)."""
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(max(0, size - 65536))
        tail = f.read()
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        if cut < 0 and size > len(tail):
            raise ClothclfError(f"{path}: the last line is over 64 KB long; not a file clothclf wrote")
        f.truncate(size - len(tail) + cut + 1)


def _flat(value: object) -> object:
    """A CSV/Parquet cell: lists and dicts as JSON text, missing values empty."""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else value


class JsonLinesFile:
    """One JSON object per line, exactly the ``clothclf predict --json`` lines."""

    def __init__(self, path: Path, resume: bool):
        self.done: set[str] = set(_json_lines_files(path)) if resume and path.exists() else set()
        self._file: IO[str] = path.open("a" if resume else "w", **_TEXT)

    def write(self, row: dict) -> None:
        self._file.write(json_line(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _json_lines_files(path: Path) -> Iterator[str]:
    _cut_torn_tail(path)
    with path.open(**_TEXT) as f:
        for number, line in enumerate(f, 1):
            try:
                yield row_of_json(line)["file"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ClothclfError(f"{path}:{number}: not a row clothclf wrote ({exc})") from exc


class CsvFile:
    """A header of :func:`columns`, then one row per photo."""

    def __init__(self, path: Path, resume: bool):
        self.done: set[str] = set()
        header = None
        if resume and path.exists():
            _cut_torn_tail(path)
            with path.open(newline="", **_TEXT) as f:
                reader = csv.DictReader(f)
                header = tuple(reader.fieldnames or ())
                self.done = {row["file"] for row in reader}
            if header and header != columns():
                raise ClothclfError(
                    f"{path}: its columns ({', '.join(header)}) are not this version's ({', '.join(columns())}); "
                    "write to a new file"
                )
        self._file: IO[str] = path.open("a" if resume else "w", newline="", **_TEXT)
        self._writer = csv.DictWriter(self._file, fieldnames=columns())
        if not header:
            self._writer.writeheader()

    def write(self, row: dict) -> None:
        self._writer.writerow(csv_cells(row))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class ParquetFile:
    """Rows journaled as JSON lines, then written with the file's earlier rows as one Parquet file."""

    @staticmethod
    def journal_of(path: Path) -> Path:
        """Where the rows of a Parquet file being written wait until it is closed."""
        return path.with_name(f".{path.name}.partial.jsonl")

    def __init__(self, path: Path, resume: bool):
        try:
            import pyarrow.parquet
        except ImportError as exc:
            raise ClothclfError("writing .parquet needs pyarrow (pip install pyarrow)") from exc
        self._pq, self._path = pyarrow.parquet, path
        self._journal_path = self.journal_of(path)
        if not resume:
            self._journal_path.unlink(missing_ok=True)
        self._journal = JsonLinesFile(self._journal_path, resume)
        self.done = self._journal.done
        if resume and path.exists():
            self.done |= set(self._pq.read_table(path, columns=["file"]).column("file").to_pylist())
        self._resume = resume

    def write(self, row: dict) -> None:
        self._journal.write(row)

    def close(self) -> None:
        import pyarrow as pa

        self._journal.close()
        schema = pa.schema(
            [(name, pa.float64() if name in _FLOAT_COLUMNS else pa.string()) for name in columns()]
        )
        with atomic_path(self._path) as tmp, self._pq.ParquetWriter(tmp, schema) as writer:
            if self._resume and self._path.exists():
                for batch in self._pq.ParquetFile(self._path).iter_batches():
                    writer.write_batch(batch.cast(schema))
            for rows in _journal_chunks(self._journal_path):
                cells = [{n: _parquet_cell(n, row.get(n)) for n in columns()} for row in rows]
                writer.write_table(pa.Table.from_pylist(cells, schema=schema))
        self._journal_path.unlink()


#: Parquet columns stored as numbers; every other one is text (lists as JSON).
_FLOAT_COLUMNS = frozenset({"confidence", "ood_score"})


def _parquet_cell(name: str, value: object) -> object:
    """A row's value as Parquet stores it: floats as numbers, lists as JSON, the rest as UTF-8 text (a
    file name's bytes that are not UTF-8 as backslash escapes: Parquet text must be valid UTF-8)."""
    if value is None or name in _FLOAT_COLUMNS:
        return value
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _journal_chunks(path: Path, size: int = 10_000) -> Iterator[list[dict]]:
    rows: list[dict] = []
    with path.open(**_TEXT) as f:
        for line in f:
            rows.append(row_of_json(line))
            if len(rows) == size:
                yield rows
                rows = []
    if rows:
        yield rows


def open_result_file(path: str | os.PathLike, resume: bool = False) -> ResultFile:
    """A CSV, JSON-lines or Parquet file by suffix; refuses to overwrite an existing one unless resuming."""
    path = Path(path)
    kinds = {".csv": CsvFile, ".jsonl": JsonLinesFile, ".parquet": ParquetFile}
    if path.suffix.lower() not in kinds:
        raise ClothclfError(f"{path}: the output must end in {', '.join(SUFFIXES)}")
    journal = ParquetFile.journal_of(path)  # a Parquet run stopped before it wrote its file
    if (path.exists() or (path.suffix.lower() == ".parquet" and journal.exists())) and not resume:
        shown = path if path.exists() else f"{path} was begun ({journal.name}) and"
        raise ClothclfError(f"{shown} exists: add --resume to continue it, or choose a new file")
    if not path.parent.is_dir():
        raise ClothclfError(f"{path.parent}: no such folder")
    return kinds[path.suffix.lower()](path, resume)
