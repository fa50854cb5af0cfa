"""Serving: a thread-safe :class:`Classifier` over a LiteRT model, or a Keras model as a fallback.

With a ``model.tflite`` in the model folder (or, for a head-only run, the backbone's
``features.tflite`` and the head's weights ``head.npz``) nothing here imports TensorFlow: images are decoded by
:func:`clothclf.data.images.load_image` (the decoder training used) and run by the runtimes of
:mod:`clothclf.serving.runtime`. Without a ``model.tflite`` the Keras ``model.keras`` is used (and
TensorFlow is imported).
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clothclf.data.images import DEFAULT_MAX_PIXELS, ImageInput, load_image
from clothclf.errors import ClothclfError, RunError
from clothclf.runs import read_class_names, read_summary, verify_model_files
from clothclf.serving.runtime import DenseHead, FeaturesThenHead, KerasRunner, LiteRTRunner, available_cpus
from clothclf.training.calibration import apply_temperature

BACKENDS = ("auto", "litert", "litert-int8", "keras")
#: Images one worker of :meth:`Classifier.predict_stream` decodes and runs together.
CHUNK_SIZE = 8


@dataclass(frozen=True)
class Prediction:
    """The answer for one image: the top label, its probability, the top k and every class's probability."""

    label: str
    confidence: float
    top_k: tuple[tuple[str, float], ...]
    probabilities: dict[str, float] = field(repr=False)

    def to_dict(self) -> dict:
        """JSON-ready: label, confidence and top_k as a list of {label, probability}."""
        return {
            "label": self.label,
            "confidence": self.confidence,
            "top_k": [{"label": name, "probability": p} for name, p in self.top_k],
        }


class Classifier:
    """Classifies images into a model's classes. Safe to share between threads."""

    def __init__(
        self,
        runner: Callable[[np.ndarray], np.ndarray],
        class_names: Sequence[str],
        image_size: int,
        *,
        backend: str,
        model_dir: Path,
        tta: bool = False,
        temperature: float = 1.0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        stream_runner: Callable[[], Callable[[np.ndarray], np.ndarray]] | None = None,
    ):
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, not {temperature}")
        self._run = runner
        self._make_stream_runner = stream_runner
        self._stream_run: Callable[[np.ndarray], np.ndarray] | None = None
        self._stream_lock = threading.Lock()
        self.class_names = tuple(class_names)
        self.image_size = image_size
        self.backend = backend
        self.model_dir = model_dir
        self.tta = tta
        self.temperature = temperature
        self.max_pixels = max_pixels

    def __repr__(self) -> str:
        return (
            f"Classifier({str(self.model_dir)!r}, backend={self.backend!r}, "
            f"image_size={self.image_size}, classes={len(self.class_names)}, tta={self.tta}, "
            f"temperature={self.temperature:.3g})"
        )

    def load(self, image: ImageInput) -> np.ndarray:
        """Decode ``image`` exactly as training did, at this model's input size."""
        return load_image(image, self.image_size, self.max_pixels)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities of a batch of decoded ``uint8`` images, (n, size, size, 3) -> (n, k).

        With test-time augmentation the probabilities are averaged with those of the mirror image;
        then they are temperature-scaled (see :mod:`clothclf.training.calibration`).
        """
        return self._probabilities(pixels, self._run)

    def _stream_runner(self) -> Callable[[np.ndarray], np.ndarray]:
        """What :meth:`predict_stream`'s workers run: single-threaded interpreters, made on first use.

        Side by side, single-threaded LiteRT interpreters do more per CPU second than one that uses
        every core, which is what a single photo's latency wants.
        """
        if self._make_stream_runner is None:
            return self._run
        with self._stream_lock:
            if self._stream_run is None:
                self._stream_run = self._make_stream_runner()
            return self._stream_run

    def _probabilities(self, pixels: np.ndarray, run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        expected = (self.image_size, self.image_size, 3)
        if pixels.ndim != 4 or pixels.shape[1:] != expected:
            raise ValueError(
                f"expected images of shape (n, {', '.join(map(str, expected))}), not {pixels.shape}"
            )
        x = pixels.astype(np.float32)
        probs = run(x)
        if self.tta:
            probs = (probs + run(np.ascontiguousarray(x[:, :, ::-1]))) / 2.0
        return apply_temperature(probs, self.temperature)

    def _prediction(self, probs: np.ndarray, top_k: int) -> Prediction:
        order = np.argsort(-probs, kind="stable")[: max(1, min(top_k, len(self.class_names)))]
        return Prediction(
            label=self.class_names[order[0]],
            confidence=float(probs[order[0]]),
            top_k=tuple((self.class_names[i], float(probs[i])) for i in order),
            probabilities={name: float(p) for name, p in zip(self.class_names, probs)},
        )

    def predict(self, image: ImageInput, top_k: int = 3) -> Prediction:
        """Classify one image (path, bytes, file-like, PIL image or array)."""
        return self._prediction(self.probabilities(self.load(image)[None])[0], top_k)

    def predict_stream(
        self, images: Iterable[ImageInput], top_k: int = 3, workers: int | None = None
    ) -> Iterator[Prediction | ClothclfError]:
        """Classify a stream of images in order; an unreadable one yields its error and the others still run.

        ``workers`` threads (default: one per CPU) each decode a chunk of ``CHUNK_SIZE`` images and run it
        through the model, so one chunk's decoding overlaps another's forward pass (Pillow and LiteRT
        release the GIL). At most ``2 * workers + 1`` chunks are in flight, so memory stays bounded
        however long ``images`` is, and ``images`` is read lazily.
        """
        workers = workers or available_cpus()
        chunks = _chunks(images, CHUNK_SIZE)
        with ThreadPoolExecutor(workers, thread_name_prefix="clothclf-predict") as pool:
            pending: deque[Future[list[Prediction | ClothclfError]]] = deque()
            try:
                for chunk in chunks:
                    pending.append(pool.submit(self._try_chunk, chunk, top_k))
                    if len(pending) > 2 * workers:
                        yield from pending.popleft().result()
                while pending:
                    yield from pending.popleft().result()
            finally:  # the consumer stopped early: do not decode what nobody will read
                for future in pending:
                    future.cancel()

    def _try_chunk(self, images: Sequence[ImageInput], top_k: int) -> list[Prediction | ClothclfError]:
        decoded: list[np.ndarray | ClothclfError] = []
        for image in images:
            try:
                decoded.append(self.load(image))
            except ClothclfError as exc:
                decoded.append(exc)
        good = [d for d in decoded if isinstance(d, np.ndarray)]
        probs = iter(self._probabilities(np.stack(good), self._stream_runner()) if good else ())
        return [d if isinstance(d, ClothclfError) else self._prediction(next(probs), top_k) for d in decoded]

    def predict_batch(self, images: Sequence[ImageInput], top_k: int = 3) -> list[Prediction]:
        """Classify several images; raises on the first that cannot be read."""
        results: list[Prediction] = []
        for result in self.predict_stream(images, top_k):
            if isinstance(result, ClothclfError):
                raise result
            results.append(result)
        return results

    def try_predict_batch(
        self, images: Sequence[ImageInput], top_k: int = 3
    ) -> list[Prediction | ClothclfError]:
        """Classify several images; an unreadable one yields its error and the others still run."""
        return list(self.predict_stream(images, top_k))


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _model_files(model_dir: Path, backend: str) -> tuple[str, tuple[str, ...]]:
    """The backend to use (``auto`` resolved) and the model files it loads from ``model_dir``."""
    names = ("model.tflite", "model_int8.tflite", "features.tflite", "head.npz", "model.keras")
    present = {name for name in names if (model_dir / name).is_file()}
    if backend == "auto":
        split_model = {"features.tflite", "head.npz"} <= present
        backend = "litert" if "model.tflite" in present or split_model else "keras"
    if backend == "litert-int8":
        if "model_int8.tflite" not in present:
            raise RunError(
                f"{model_dir}: no model_int8.tflite (run `clothclf export --int8 --model {model_dir}`)"
            )
        return backend, ("model_int8.tflite",)
    if backend == "keras":
        if "model.keras" not in present:
            raise RunError(f"{model_dir}: no model.tflite nor model.keras")
        return backend, ("model.keras",)
    if "model.tflite" in present:
        return backend, ("model.tflite",)
    if {"features.tflite", "head.npz"} <= present:
        return backend, ("features.tflite", "head.npz")
    raise RunError(f"{model_dir}: no model.tflite (run `clothclf export --model {model_dir}`)")


def _load_runner(
    model_dir: Path, files: tuple[str, ...], threads: int, pool_size: int
) -> LiteRTRunner | FeaturesThenHead | KerasRunner:
    """The runner of ``files`` once each matches its recorded digest; a file its format library
    refuses (a damaged one, whatever the library raises) is a :class:`RunError` naming it."""
    verify_model_files(model_dir, files)
    try:
        if files == ("model.keras",):
            return KerasRunner(model_dir / "model.keras")
        if len(files) == 1 and files[0].endswith(".tflite"):  # model.tflite or model_int8.tflite
            return LiteRTRunner(model_dir / files[0], threads, pool_size)
        features = LiteRTRunner(model_dir / "features.tflite", threads, pool_size)
        return FeaturesThenHead(features, DenseHead(model_dir / "head.npz"))
    except ClothclfError:
        raise
    except Exception as exc:
        raise RunError(
            f"{model_dir}: cannot load {' and '.join(files)} ({type(exc).__name__}: {exc})"
        ) from exc


def load_classifier(
    model_dir: str | Path | None = None,
    *,
    backend: str = "auto",
    tta: bool | None = None,
    temperature: float | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    num_threads: int | None = None,
    pool_size: int = 2,
) -> Classifier:
    """Load the classifier in ``model_dir`` (default: the shipped model).

    ``backend`` is ``"auto"`` (LiteRT when ``model.tflite`` exists, or ``features.tflite`` with
    ``head.npz`` as head-only runs save, else Keras), ``"litert"``, ``"litert-int8"`` (the full-integer
    ``model_int8.tflite`` that ``clothclf export --int8`` writes) or ``"keras"``. ``tta`` and
    ``temperature`` default to what the run recorded in ``run.json`` (no TTA, temperature 1 when
    absent). For LiteRT, ``num_threads`` (default: every available CPU) is per interpreter, and up to
    ``pool_size`` interpreters serve concurrent callers; :meth:`Classifier.predict_stream` (and so
    ``predict_batch``) runs one single-threaded interpreter per CPU instead, made on its first use.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, not {backend!r}")
    if model_dir is None:
        from clothclf.config import Paths

        model_dir = Paths.from_env().default_model_dir
    model_dir = Path(model_dir)
    if not (model_dir / "class_names.json").is_file():
        raise RunError(f"{model_dir}: not a clothclf model folder (no class_names.json)")
    summary = read_summary(model_dir) if (model_dir / "run.json").is_file() else {}
    class_names = read_class_names(model_dir)
    backend, files = _model_files(model_dir, backend)
    threads = num_threads or available_cpus()
    runner = _load_runner(model_dir, files, threads, pool_size)
    stream_runner = None
    if threads > 1 and backend != "keras":  # predict_stream: one single-threaded interpreter per worker
        stream_runner = functools.partial(_load_runner, model_dir, files, 1, available_cpus())
    if runner.num_outputs != len(class_names):
        raise RunError(
            f"{model_dir}: the model has {runner.num_outputs} outputs but class_names.json {len(class_names)} classes"
        )
    return Classifier(
        runner,
        class_names,
        runner.input_size,
        backend=backend,
        model_dir=model_dir,
        tta=bool(summary.get("tta", False)) if tta is None else tta,
        temperature=float(summary.get("temperature", 1.0)) if temperature is None else temperature,
        max_pixels=max_pixels,
        stream_runner=stream_runner,
    )
