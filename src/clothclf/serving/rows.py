"""One photo, one row: reading a photo from a path or a URI, classifying files into rows in order.

Both catalog engines make their rows here: the local one (:mod:`clothclf.serving.batch`) and each Ray
actor (:mod:`clothclf.serving.ray_engine`), so neither imports the other to share them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from clothclf.data.images import ImageInput
from clothclf.errors import ClothclfError
from clothclf.serving.classifier import Classifier, Prediction


def is_uri(path: str) -> bool:
    """Whether ``path`` names object storage or another filesystem (``s3://``, ``gs://``, ``file://`` ...)."""
    return "://" in path


class UriFile:
    """A photo in object storage, read (through pyarrow's filesystems) only when the decoder asks."""

    def __init__(self, uri: str):
        self.name = uri

    def read(self) -> bytes:
        from pyarrow import fs

        try:
            filesystem, path = fs.FileSystem.from_uri(self.name)
            with filesystem.open_input_stream(path) as stream:
                return stream.read()
        except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) for bad URIs
            raise OSError(str(exc)) from exc


def open_source(file: str) -> ImageInput:
    """What the decoder reads for ``file``: the path itself, or a URI read lazily by the decoding thread."""
    return UriFile(file) if is_uri(file) else file


def prediction_row(file: str, result: Prediction | ClothclfError) -> dict:
    """The row of one photo: its file and prediction, or its file and error."""
    if isinstance(result, ClothclfError):
        return {"file": file, "error": str(result)}
    return {"file": file, **result.to_dict()}


def classify_files(
    classifier: Classifier, files: Iterable[str], top_k: int = 3, workers: int | None = None
) -> Iterator[dict]:
    """Rows of ``files`` in order, classified in this process (see :meth:`Classifier.predict_stream`)."""
    names, opened = itertools.tee(files)  # predict_stream reads a bounded number of files ahead
    results = classifier.predict_stream(map(open_source, opened), top_k, workers)
    for file, result in zip(names, results):
        yield prediction_row(file, result)
