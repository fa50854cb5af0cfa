"""Batch classification on a Ray cluster: Ray Data ``map_batches`` with one LiteRT classifier per actor.

The driver sends only the photos' paths (local paths that every node can read, or URIs such as
``s3://bucket/photos/x.jpg`` read through pyarrow's filesystems); each actor reads and decodes its
photos itself. The model folder's serving files travel once through Ray's object store, so the workers
need clothclf installed but not the model. Rows come back in input order, the same rows the local
engine gives. Needs ``pip install "clothclf[ray]"``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from clothclf.errors import ClothclfError
from clothclf.runs import CLASS_NAMES, SERVING_FILES

#: Photos per ``map_batches`` call (one actor decodes and classifies them as one stream).
RAY_BATCH_SIZE = 64


def model_files(model_dir: str | os.PathLike | None) -> dict[str, bytes]:
    """The serving files of ``model_dir`` (default: the shipped model) as bytes, to send to the workers."""
    if model_dir is None:
        from clothclf.config import Paths

        model_dir = Paths.from_env().default_model_dir
    folder = Path(model_dir)
    files = {name: (folder / name).read_bytes() for name in SERVING_FILES if (folder / name).is_file()}
    if CLASS_NAMES not in files:
        raise ClothclfError(f"{folder}: not a clothclf model folder (no {CLASS_NAMES})")
    return files


class RayClassifier:
    """A Ray Data actor: writes the model files to a temporary folder once, then classifies batches."""

    def __init__(self, files: dict[str, bytes], backend: str, top_k: int, num_threads: int = 1):
        from clothclf.serving.classifier import load_classifier

        self._folder = tempfile.TemporaryDirectory(prefix="clothclf-model-")
        for name, data in files.items():
            Path(self._folder.name, name).write_bytes(data)
        self._classifier = load_classifier(self._folder.name, backend=backend, num_threads=num_threads)
        self._top_k, self._workers = top_k, num_threads + 1

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from clothclf.serving.rows import classify_files

        rows = classify_files(self._classifier, [str(f) for f in batch["file"]], self._top_k, self._workers)
        return {"row": np.array([json.dumps(row) for row in rows], dtype=object)}


def ray_rows(
    files: Iterable[str],
    model_dir: str | os.PathLike | None = None,
    *,
    backend: str = "auto",
    top_k: int = 3,
    address: str | None = None,
    actors: int | None = None,
) -> Iterator[dict]:
    """Rows of ``files`` classified on Ray, in order; starts Ray (``address`` or a local instance) if needed.

    ``actors`` is the most actors to run (default: one per CPU of the cluster).
    """
    import ray  # the [ray] extra (the CLI names it when missing)

    if not ray.is_initialized():
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    items = [{"file": file} for file in files]
    if not items:
        return
    size = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    dataset = ray.data.from_items(items).map_batches(
        RayClassifier,
        fn_constructor_kwargs={"files": model_files(model_dir), "backend": backend, "top_k": top_k},
        batch_size=RAY_BATCH_SIZE,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=size),
        num_cpus=1,
        batch_format="numpy",
    )
    for row in dataset.iter_rows():
        yield json.loads(row["row"])
