"""Serving runtimes: a pool of LiteRT interpreters, a NumPy dense head, and the Keras model as a fallback.

Each runtime is a callable from a float32 batch (n, size, size, 3) to (n, k) outputs with ``input_size``
and ``num_outputs``. Nothing here imports TensorFlow except :class:`KerasRunner` (lazily). An
interpreter is not thread-safe, so each is lent to one caller at a time; the pool grows on demand up
to ``pool_size``, so a single user only ever pays for one.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from clothclf.errors import RunError


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


#: The activations a saved head may use (see :func:`clothclf.serving.export.export_head`).
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


class FeaturesThenHead:
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


class KerasRunner:
    """The Keras model (imports TensorFlow), called under a lock."""

    def __init__(self, path: Path):
        from clothclf.modeling.models import load_model

        self._model = load_model(str(path))
        self._lock = threading.Lock()
        self.input_size = int(self._model.input_shape[1])
        self.num_outputs = int(self._model.output_shape[-1])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.predict_on_batch(batch), dtype=np.float32)
