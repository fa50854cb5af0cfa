"""The Dataset page's issue finder, run in a child process so that the app server never imports TensorFlow.

:func:`~clothclf.evaluation.data_issues.dataset_issues` needs a model's frozen feature extractor, and
finding it (rebuilding the backbone, converting it on a cache miss) imports TensorFlow and Keras: about
900 MB of resident memory that a process never gives back, too much for a server in a 1 GB container.
:func:`issues_in_child` runs ``python -m clothclf.app.issues_process`` instead: the child reads the
dataset, finds its issues and lays out the map of the photos, writes them to a folder the caller reads
back, and reports progress as JSON lines on its standard output. Its memory goes when it exits.
No Streamlit.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clothclf.app.jobs import child_env
from clothclf.config import Paths
from clothclf.errors import ClothclfError, DatasetError
from clothclf.evaluation.data_issues import DataIssues, ProgressHook

ISSUES_FILE, MAP_FILE, LOG_FILE = "issues.json", "map.npz", "output.log"


@dataclass(frozen=True)
class PhotoMap:
    """Every photo's place on the 2-D map of the features, with its relative file and label index."""

    files: tuple[str, ...]
    labels: np.ndarray  # (n,) int
    xy: np.ndarray  # (n, 2) float32


def issues_in_child(
    root: str | Path,
    fingerprint: str,
    model_dir: str | Path | None,
    paths: Paths,
    progress: ProgressHook | None = None,
) -> tuple[DataIssues, PhotoMap]:
    """The issues of the dataset in ``root`` (whose fingerprint must still be ``fingerprint``) and its
    map, found with ``model_dir``'s frozen extractor in a child process. The child's clothclf errors
    come back as :class:`~clothclf.errors.ClothclfError` (its sentence); it is killed if the caller stops."""
    with tempfile.TemporaryDirectory(prefix="clothclf-issues-") as out:
        command = [sys.executable, "-m", __name__, str(root), out, fingerprint, str(model_dir or "")]
        with _child(command, Path(out), paths) as (process, lines):
            error = _follow(lines, progress)
        if error is not None:
            raise ClothclfError(error)
        if process.returncode < 0:
            name = signal.Signals(-process.returncode).name
            memory = " (most likely it ran out of memory)" if name == "SIGKILL" else ""
            raise ClothclfError(f"the process finding the issues was killed by {name}{memory}; try again")
        if not (Path(out) / ISSUES_FILE).is_file():
            log = (Path(out) / LOG_FILE).read_text(errors="replace").strip().splitlines()
            raise ClothclfError(f"finding the issues failed: {log[-1] if log else 'the process ended early'}")
        return _read(Path(out))


@contextlib.contextmanager
def _child(command: list[str], out: Path, paths: Paths) -> Iterator[tuple[subprocess.Popen, Iterator[str]]]:
    """The child and its standard output, line by line (its standard error goes to ``out/output.log``);
    killed if still running on exit, then waited for."""
    env = {
        **child_env(),
        "CLOTHCLF_CACHE_DIR": str(paths.cache_dir),
        "CLOTHCLF_RUNS_DIR": str(paths.runs_dir),
        "CLOTHCLF_DATA_DIR": str(paths.data_dir),
        "CLOTHCLF_MODEL_DIR": str(paths.default_model_dir),
    }
    with (out / LOG_FILE).open("wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env, text=True
        )
        try:
            yield process, iter(process.stdout.readline, "")
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            process.stdout.close()


def _follow(lines: Iterator[str], progress: ProgressHook | None) -> str | None:
    """Pass the child's progress on; its error sentence, if it sent one."""
    for line in lines:
        try:
            message = json.loads(line)
        except ValueError:
            continue  # a library's own print
        if isinstance(message, dict) and "error" in message:
            return str(message["error"])
        if isinstance(message, dict) and progress is not None:
            progress(float(message.get("done", 0.0)), str(message.get("what", "")))
    return None


def _read(out: Path) -> tuple[DataIssues, PhotoMap]:
    values = json.loads((out / ISSUES_FILE).read_text())
    issues = DataIssues.from_json(values["issues"], values["photos"], values["suggested"])
    with np.load(out / MAP_FILE) as arrays:
        photo_map = PhotoMap(tuple(str(f) for f in arrays["files"]), arrays["labels"], arrays["xy"])
    return issues, photo_map


def _emit(message: dict) -> None:
    print(json.dumps(message), flush=True)


def find_and_write(root: str, out: Path, fingerprint: str, model_dir: str | None) -> None:
    """The child's work: the issues of the dataset in ``root`` and its map, written into ``out``."""
    from clothclf.data.datasets import create_dataset, dataset_fingerprint
    from clothclf.evaluation.data_issues import dataset_issues, embedding_map

    dataset = create_dataset(root)
    if dataset_fingerprint(dataset) != fingerprint:
        raise DatasetError(f"the dataset in {root} changed while it was being looked at; look again")
    issues, pooled = dataset_issues(
        dataset, model_dir, Paths.from_env(), progress=lambda done, what: _emit({"done": done, "what": what})
    )
    record = {"issues": issues.to_json(), "photos": issues.photos, "suggested": issues.suggested}
    (out / ISSUES_FILE).write_text(json.dumps(record))
    np.savez(
        out / MAP_FILE,
        files=np.array(pooled.files, dtype=str),
        labels=pooled.labels,
        xy=embedding_map(pooled.features),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m clothclf.app.issues_process ROOT OUT FINGERPRINT [MODEL_DIR]``."""
    from clothclf.allocator import tune_for_server

    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (3, 4):
        print(
            "usage: python -m clothclf.app.issues_process ROOT OUT FINGERPRINT [MODEL_DIR]", file=sys.stderr
        )
        return 2
    tune_for_server()
    model_dir = args[3] if len(args) == 4 and args[3] else None
    try:
        find_and_write(args[0], Path(args[1]), args[2], model_dir)
    except ClothclfError as exc:
        _emit({"error": str(exc)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
