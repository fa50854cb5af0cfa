"""Serving: a thread-safe :class:`Classifier` over a LiteRT model, or a Keras model as a fallback.

With a ``model.tflite`` in the model folder, nothing here imports TensorFlow: images are decoded by
:func:`clothclf.images.load_image` and run by a small pool of LiteRT interpreters (one per
concurrent caller; interpreters are not thread-safe). Without one, the Keras ``model.keras`` is used.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clothclf.errors import ClothclfError, RunError
from clothclf.images import DEFAULT_MAX_PIXELS, ImageInput, load_image


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


class _LiteRTRunner:
    """A pool of LiteRT interpreters, each used by one thread at a time."""

    def __init__(self, path: Path, num_threads: int, pool_size: int):
        from ai_edge_litert.interpreter import Interpreter

        self._make = lambda: Interpreter(model_path=str(path), num_threads=num_threads)
        self._pool: queue.LifoQueue = queue.LifoQueue()
        self._created = 0
        self._limit = pool_size
        self._lock = threading.Lock()
        first = self._new()
        self.input_size = int(first.get_input_details()[0]["shape"][1])
        self._pool.put(first)

    def _new(self):
        interpreter = self._make()
        interpreter.allocate_tensors()
        self._created += 1
        return interpreter

    def _acquire(self):
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            with self._lock:
                if self._created < self._limit:
                    return self._new()
            return self._pool.get()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        interpreter = self._acquire()
        try:
            inp = interpreter.get_input_details()[0]
            out = interpreter.get_output_details()[0]
            results = []
            for image in batch:
                interpreter.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
                interpreter.invoke()
                results.append(interpreter.get_tensor(out["index"])[0].copy())
            return np.stack(results)
        finally:
            self._pool.put(interpreter)


class _KerasRunner:
    """The Keras model, called under a lock."""

    def __init__(self, path: Path):
        from clothclf.models import load_model

        self._model = load_model(str(path))
        self._lock = threading.Lock()
        self.input_size = int(self._model.input_shape[1])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.predict_on_batch(batch.astype(np.float32)))


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
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self._run = runner
        self.class_names = tuple(class_names)
        self.image_size = image_size
        self.backend = backend
        self.model_dir = model_dir
        self.tta = tta
        self.max_pixels = max_pixels

    def load(self, image: ImageInput) -> np.ndarray:
        """Decode ``image`` exactly as training did, at this model's input size."""
        return load_image(image, self.image_size, self.max_pixels)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities of a batch of decoded ``uint8`` images, (n, size, size, 3) -> (n, k)."""
        x = pixels.astype(np.float32)
        probs = self._run(x)
        if self.tta:
            probs = (probs + self._run(np.ascontiguousarray(x[:, :, ::-1]))) / 2.0
        return probs

    def _prediction(self, probs: np.ndarray, top_k: int) -> Prediction:
        order = np.argsort(-probs)[: max(1, min(top_k, len(self.class_names)))]
        return Prediction(
            label=self.class_names[order[0]],
            confidence=float(probs[order[0]]),
            top_k=tuple((self.class_names[i], float(probs[i])) for i in order),
            probabilities={name: float(p) for name, p in zip(self.class_names, probs)},
        )

    def predict(self, image: ImageInput, top_k: int = 3) -> Prediction:
        """Classify one image (path, bytes, file-like, PIL image or array)."""
        return self._prediction(self.probabilities(self.load(image)[None])[0], top_k)

    def predict_batch(self, images: Sequence[ImageInput], top_k: int = 3) -> list[Prediction]:
        """Classify several images; raises on the first that cannot be read."""
        if not images:
            return []
        probs = self.probabilities(np.stack([self.load(image) for image in images]))
        return [self._prediction(p, top_k) for p in probs]

    def try_predict_batch(
        self, images: Sequence[ImageInput], top_k: int = 3
    ) -> list[Prediction | ClothclfError]:
        """Classify several images; an unreadable one yields its error and the others still run."""
        results: list[Prediction | ClothclfError] = []
        for image in images:
            try:
                results.append(self.predict(image, top_k))
            except ClothclfError as exc:
                results.append(exc)
        return results


def _read_json(path: Path):
    return json.loads(path.read_text())


def load_classifier(
    model_dir: str | Path | None = None,
    *,
    backend: str = "auto",
    tta: bool | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    num_threads: int | None = None,
    pool_size: int = 4,
) -> Classifier:
    """Load the classifier in ``model_dir`` (default: the shipped model).

    ``backend`` is ``"auto"`` (LiteRT when ``model.tflite`` exists, else Keras), ``"litert"`` or
    ``"keras"``. ``tta`` defaults to what the run was trained with (``run.json``).
    """
    if model_dir is None:
        from clothclf.config import Paths

        model_dir = Paths.from_env().default_model_dir
    model_dir = Path(model_dir)
    names_file = model_dir / "class_names.json"
    if not names_file.is_file():
        raise RunError(f"{model_dir}: not a clothclf model folder (no class_names.json)")
    class_names = _read_json(names_file)
    summary = _read_json(model_dir / "run.json") if (model_dir / "run.json").is_file() else {}
    tflite, keras_file = model_dir / "model.tflite", model_dir / "model.keras"
    if backend == "auto":
        backend = "litert" if tflite.is_file() else "keras"
    if backend == "litert":
        if not tflite.is_file():
            raise RunError(f"{model_dir}: no model.tflite (run `clothclf export --model {model_dir}`)")
        runner = _LiteRTRunner(tflite, num_threads or os.cpu_count() or 1, pool_size)
        image_size = runner.input_size
    elif backend == "keras":
        if not keras_file.is_file():
            raise RunError(f"{model_dir}: no model.keras")
        runner = _KerasRunner(keras_file)
        image_size = runner.input_size
    else:
        raise ValueError(f"backend must be 'auto', 'litert' or 'keras', not {backend!r}")
    return Classifier(
        runner,
        class_names,
        image_size,
        backend=backend,
        model_dir=model_dir,
        tta=bool(summary.get("tta", False)) if tta is None else tta,
        max_pixels=max_pixels,
    )
