"""Serving: a thread-safe :class:`Classifier` over a LiteRT model, or a Keras model as a fallback.

With a ``model.tflite`` in the model folder (or, for a head-only run, the backbone's
``features.tflite`` and the head's weights ``head.npz``) nothing here imports TensorFlow: images are decoded by
:func:`clothclf.images.load_image` (the decoder training used) and run by a pool of LiteRT
interpreters. An interpreter is not thread-safe, so each is lent to one caller at a time; the pool
grows on demand up to ``pool_size``, so a single user only ever pays for one. Without a
``model.tflite`` the Keras ``model.keras`` is used (and TensorFlow is imported).
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clothclf.calibration import apply_temperature
from clothclf.errors import ClothclfError, RunError
from clothclf.images import DEFAULT_MAX_PIXELS, ImageInput, load_image

BACKENDS = ("auto", "litert", "keras")
#: Images decoded and run together by :meth:`Classifier.predict_batch` (bounds memory for long lists).
CHUNK_SIZE = 32


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


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class _Interpreter:
    """One LiteRT interpreter with its input and output tensors looked up once."""

    def __init__(self, path: Path, num_threads: int):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise RunError(f"{path}: LiteRT cannot load it ({exc})") from exc
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise RunError(f"{path}: expected one input and one output, not {len(inputs)} and {len(outputs)}")
        inp, out = inputs[0], outputs[0]
        shape = tuple(int(d) for d in inp["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[1] != shape[2] or shape[3] != 3:
            raise RunError(f"{path}: expected an input of shape (1, size, size, 3), not {shape}")
        if np.dtype(inp["dtype"]) != np.float32:
            raise RunError(f"{path}: expected a float32 input, not {np.dtype(inp['dtype'])}")
        self.input_size = shape[1]
        self.num_outputs = int(out["shape"][-1])
        self._input, self._output = inp["index"], out["index"]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities of a float32 batch (n, size, size, 3), one invoke per image."""
        result = np.empty((len(batch), self.num_outputs), np.float32)
        for i in range(len(batch)):
            self._interpreter.set_tensor(self._input, batch[i : i + 1])
            self._interpreter.invoke()  # releases the GIL: interpreters of a pool run in parallel
            result[i] = self._interpreter.get_tensor(self._output)[0]
        return result


class LiteRTRunner:
    """Runs a LiteRT model on float32 batches: a pool of up to ``pool_size`` interpreters, created when
    concurrent callers need them."""

    def __init__(self, path: Path, num_threads: int, pool_size: int):
        if pool_size < 1 or num_threads < 1:
            raise ValueError("pool_size and num_threads must be at least 1")
        self._path, self._num_threads, self._limit = path, num_threads, pool_size
        self._idle: queue.LifoQueue[_Interpreter] = queue.LifoQueue()  # LIFO: the warmest one first
        self._lock = threading.Lock()
        first = _Interpreter(path, num_threads)
        self._created = 1
        self.input_size, self.num_outputs = first.input_size, first.num_outputs
        self._idle.put(first)

    @property
    def created(self) -> int:
        """How many interpreters exist so far (at most ``pool_size``)."""
        return self._created

    @contextmanager
    def _borrow(self) -> Iterator[_Interpreter]:
        try:
            interpreter = self._idle.get_nowait()
        except queue.Empty:
            with self._lock:
                grow = self._created < self._limit
                if grow:
                    interpreter = _Interpreter(self._path, self._num_threads)
                    self._created += 1
            if not grow:
                interpreter = self._idle.get()
        try:
            yield interpreter
        finally:
            self._idle.put(interpreter)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._borrow() as interpreter:
            return interpreter(batch)


def _softmax(x: np.ndarray) -> np.ndarray:
    exp = np.exp(x - x.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


#: The activations a saved head may use (see :func:`clothclf.export.export_head`).
HEAD_ACTIVATIONS = {"linear": lambda x: x, "relu": lambda x: np.maximum(x, 0.0), "softmax": _softmax}


class DenseHead:
    """A classifier head saved as ``head.npz``: dense layers (kernel, bias, activation) run in NumPy."""

    def __init__(self, path: Path):
        try:
            with np.load(path) as data:
                activations = [str(a) for a in data["activations"]]
                self.layers = [
                    (data[f"kernel_{i}"].astype(np.float32), data[f"bias_{i}"].astype(np.float32), name)
                    for i, name in enumerate(activations)
                ]
        except (OSError, ValueError, KeyError) as exc:
            raise RunError(f"{path}: not a clothclf head ({exc})") from exc
        unknown = sorted({name for *_, name in self.layers} - set(HEAD_ACTIVATIONS))
        if not self.layers or unknown:
            raise RunError(f"{path}: no layers, or unknown activations {unknown}")
        self.input_dim = self.layers[0][0].shape[0]
        self.num_outputs = self.layers[-1][0].shape[1]

    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = features
        for kernel, bias, activation in self.layers:
            x = HEAD_ACTIVATIONS[activation](x @ kernel + bias)
        return x.astype(np.float32)


class _FeaturesThenHead:
    """A head-only run: the backbone's features by LiteRT (``features.tflite``), then its head."""

    def __init__(self, features: LiteRTRunner, head: DenseHead):
        if features.num_outputs != head.input_dim:
            raise RunError(
                f"features.tflite gives {features.num_outputs} features, the head expects {head.input_dim}"
            )
        self._features, self._head = features, head
        self.input_size, self.num_outputs = features.input_size, head.num_outputs

    @property
    def created(self) -> int:
        """How many LiteRT interpreters exist so far."""
        return self._features.created

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._head(self._features(batch))


class _KerasRunner:
    """The Keras model (imports TensorFlow), called under a lock."""

    def __init__(self, path: Path):
        from clothclf.models import load_model

        self._model = load_model(str(path))
        self._lock = threading.Lock()
        self.input_size = int(self._model.input_shape[1])
        self.num_outputs = int(self._model.output_shape[-1])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.predict_on_batch(batch), dtype=np.float32)


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
    ):
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, not {temperature}")
        self._run = runner
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
        then they are temperature-scaled (see :mod:`clothclf.calibration`).
        """
        expected = (self.image_size, self.image_size, 3)
        if pixels.ndim != 4 or pixels.shape[1:] != expected:
            raise ValueError(
                f"expected images of shape (n, {', '.join(map(str, expected))}), not {pixels.shape}"
            )
        x = pixels.astype(np.float32)
        probs = self._run(x)
        if self.tta:
            probs = (probs + self._run(np.ascontiguousarray(x[:, :, ::-1]))) / 2.0
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

    def predict_batch(self, images: Sequence[ImageInput], top_k: int = 3) -> list[Prediction]:
        """Classify several images; raises on the first that cannot be read."""
        results: list[Prediction] = []
        for start in range(0, len(images), CHUNK_SIZE):
            pixels = np.stack([self.load(image) for image in images[start : start + CHUNK_SIZE]])
            results.extend(self._prediction(p, top_k) for p in self.probabilities(pixels))
        return results

    def try_predict_batch(
        self, images: Sequence[ImageInput], top_k: int = 3
    ) -> list[Prediction | ClothclfError]:
        """Classify several images; an unreadable one yields its error and the others still run."""
        results: list[Prediction | ClothclfError] = []
        for start in range(0, len(images), CHUNK_SIZE):
            decoded: list[np.ndarray | ClothclfError] = []
            for image in images[start : start + CHUNK_SIZE]:
                try:
                    decoded.append(self.load(image))
                except ClothclfError as exc:
                    decoded.append(exc)
            good = [d for d in decoded if isinstance(d, np.ndarray)]
            probs = iter(self.probabilities(np.stack(good)) if good else ())
            results.extend(
                d if isinstance(d, ClothclfError) else self._prediction(next(probs), top_k) for d in decoded
            )
        return results


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: cannot be read ({exc})") from exc


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
    ``head.npz`` as head-only runs save, else Keras), ``"litert"`` or ``"keras"``. ``tta`` and
    ``temperature`` default to what the run recorded in ``run.json`` (no TTA, temperature 1 when
    absent). For LiteRT, ``num_threads`` (default: every available CPU) is per interpreter, and up to
    ``pool_size`` interpreters serve concurrent callers.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, not {backend!r}")
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
    features_file, head_file = model_dir / "features.tflite", model_dir / "head.npz"
    split_model = features_file.is_file() and head_file.is_file()
    if backend == "auto":
        backend = "litert" if tflite.is_file() or split_model else "keras"
    runner: LiteRTRunner | _FeaturesThenHead | _KerasRunner
    if backend == "litert":
        threads = num_threads or available_cpus()
        if tflite.is_file():
            runner = LiteRTRunner(tflite, threads, pool_size)
        elif split_model:
            runner = _FeaturesThenHead(LiteRTRunner(features_file, threads, pool_size), DenseHead(head_file))
        else:
            raise RunError(f"{model_dir}: no model.tflite (run `clothclf export --model {model_dir}`)")
    else:
        if not keras_file.is_file():
            raise RunError(f"{model_dir}: no model.tflite nor model.keras")
        runner = _KerasRunner(keras_file)
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
    )
