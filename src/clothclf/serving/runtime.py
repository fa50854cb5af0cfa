"""Serving runtimes: a pool of LiteRT interpreters, a NumPy dense head, and the Keras model as a fallback.

Each runtime is a callable from a float32 batch (n, size, size, 3) to (n, k) outputs with ``input_size``
and ``num_outputs``; ``run`` also returns the pooled backbone features and the last feature map when the
model has them (:class:`ModelOutputs`; a LiteRT model names them in its signature, see
:func:`clothclf.serving.export.export_trust_model`). Nothing here imports TensorFlow except :class:`KerasRunner` (lazily). An
interpreter is not thread-safe, so each is lent to one caller at a time; the pool grows on demand up
to ``pool_size``, so a single user only ever pays for one.
"""

from __future__ import annotations

import os
import queue
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from clothclf.errors import RunError
from clothclf.numerics import softmax


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def leave_cores_to_litert() -> None:
    """Give NumPy's BLAS one thread in this process, for good (process-wide, through threadpoolctl).

    Serving's NumPy work (trust scores, explanations, a head-only run's head) is small matrix products
    next to LiteRT, which keeps every core busy. A multi-threaded BLAS then waits for a core and its
    workers spin after each product: on a busy 2-core machine one photo's trust score took 12 ms on
    two BLAS threads and 0.2 ms on one, a batch of 64 photos 26 ms and 6 ms."""
    threadpool_limits(limits=1, user_api="blas")


#: The outputs a LiteRT model may name; the first present of the first two is its main output.
OUTPUT_NAMES = ("probabilities", "features", "feature_map")


@dataclass(frozen=True)
class ModelOutputs:
    """What one run of a model gives: class probabilities and, when the model has them, its pooled
    backbone features (n, d) and last feature map (n, h, w, d)."""

    probabilities: np.ndarray
    features: np.ndarray | None = None
    feature_map: np.ndarray | None = None


def _output_indices(interpreter, path: Path) -> dict[str, int]:
    """Tensor index of each output by name; ``"main"`` is the single output or the named main one."""
    outputs = interpreter.get_output_details()
    if len(outputs) == 1:
        return {"main": outputs[0]["index"]}
    named = {name: d["index"] for name, d in interpreter.get_signature_runner().get_output_details().items()}
    main = next((name for name in OUTPUT_NAMES[:2] if name in named), None)
    if main is None or not set(named) <= set(OUTPUT_NAMES):
        raise RunError(f"{path}: outputs {sorted(named)} are not among {', '.join(OUTPUT_NAMES)}")
    return {"main": named[main], **named}


#: What LiteRT's C++ code writes to the stderr file descriptor whenever an interpreter is created: noise
#: on the stderr of every program that uses the library.
XNNPACK_NOTE = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
#: File descriptor 2 is the process's own: one redirection at a time, from any thread.
_STDERR_REDIRECTION = threading.Lock()


@contextmanager
def delegate_note_silenced() -> Iterator[None]:
    """Run the block with file descriptor 2 captured, then write back what it wrote except LiteRT's
    delegate note (so no other message is lost, only delayed by the block)."""
    with _STDERR_REDIRECTION, tempfile.TemporaryFile() as captured:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no stderr to redirect
            yield
            return
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            rest = captured.read().replace(XNNPACK_NOTE, b"")
            if rest:
                os.write(2, rest)


class _Interpreter:
    """One LiteRT interpreter with its input and output tensors looked up once."""

    def __init__(self, path: Path, num_threads: int):
        from ai_edge_litert.interpreter import Interpreter

        try:
            with delegate_note_silenced():
                self._interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
                self._interpreter.allocate_tensors()  # creates the XNNPACK delegate (and its note)
        except (ValueError, RuntimeError) as exc:
            raise RunError(f"{path}: LiteRT cannot load it ({exc})") from exc
        inputs = self._interpreter.get_input_details()
        if len(inputs) != 1:
            raise RunError(f"{path}: expected one input, not {len(inputs)}")
        self._outputs = _output_indices(self._interpreter, path)
        inp = inputs[0]
        shape = tuple(int(d) for d in inp["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[1] != shape[2] or shape[3] != 3:
            raise RunError(f"{path}: expected an input of shape (1, size, size, 3), not {shape}")
        if np.dtype(inp["dtype"]) != np.float32:
            raise RunError(f"{path}: expected a float32 input, not {np.dtype(inp['dtype'])}")
        self.input_size = shape[1]
        details = {d["index"]: d for d in self._interpreter.get_output_details()}
        self.num_outputs = int(details[self._outputs["main"]]["shape"][-1])
        self.outputs = frozenset(self._outputs)
        self._input = inp["index"]

    def arrays(self, batch: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The named outputs of a float32 batch (n, size, size, 3), one invoke per image."""
        result: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for i in range(len(batch)):
            self._interpreter.set_tensor(self._input, batch[i : i + 1])
            self._interpreter.invoke()  # releases the GIL: interpreters of a pool run in parallel
            for name in names:
                result[name].append(self._interpreter.get_tensor(self._outputs[name])[0])
        return {name: np.asarray(values, np.float32) for name, values in result.items()}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """The main output (probabilities, or features of an extractor) of a float32 batch."""
        return self.arrays(batch, ("main",))["main"].reshape(len(batch), self.num_outputs)


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
        self.outputs = first.outputs
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

    def arrays(self, batch: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The named outputs of a batch (names from ``outputs``)."""
        with self._borrow() as interpreter:
            return interpreter.arrays(batch, names)

    def run(self, batch: np.ndarray, *, feature_map: bool = False) -> ModelOutputs:
        """Probabilities, and the features and feature map this model has (the map only when asked)."""
        names = ("main", *[n for n in ("features", "feature_map") if n in self.outputs])
        if not feature_map:
            names = tuple(n for n in names if n != "feature_map")
        arrays = self.arrays(batch, names)
        return ModelOutputs(arrays["main"], arrays.get("features"), arrays.get("feature_map"))


def mirror_averaged(
    probs: np.ndarray, predict: Callable[[np.ndarray], np.ndarray], batch: np.ndarray
) -> np.ndarray:
    """Test-time augmentation: ``probs`` of a batch (n, h, w, c) averaged with ``predict`` of its mirror image."""
    return (probs + predict(np.ascontiguousarray(batch[:, :, ::-1]))) / 2.0


#: The activations a saved head may use (see :func:`clothclf.serving.export.export_head`).
HEAD_ACTIVATIONS = {"linear": lambda x: x, "relu": lambda x: np.maximum(x, 0.0), "softmax": softmax}


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
        *_, last = self.layers
        return HEAD_ACTIVATIONS[last[2]](self.logits(features)).astype(np.float32)

    def hidden(self, features: np.ndarray) -> list[np.ndarray]:
        """The input of each layer: ``features``, then each hidden layer's activations."""
        inputs = [features]
        for kernel, bias, activation in self.layers[:-1]:
            inputs.append(HEAD_ACTIVATIONS[activation](inputs[-1] @ kernel + bias))
        return inputs

    def logits(self, features: np.ndarray) -> np.ndarray:
        """The last layer before its activation (the class scores softmax turns into probabilities)."""
        kernel, bias, _ = self.layers[-1]
        return (self.hidden(features)[-1] @ kernel + bias).astype(np.float32)


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

    def run(self, batch: np.ndarray, *, feature_map: bool = False) -> ModelOutputs:
        """Probabilities from the head, the features, and the feature map if asked and present."""
        wanted = (
            ("main", "feature_map") if feature_map and "feature_map" in self._features.outputs else ("main",)
        )
        arrays = self._features.arrays(batch, wanted)
        features = arrays["main"].reshape(len(batch), -1)
        return ModelOutputs(self._head(features), features, arrays.get("feature_map"))


class KerasRunner:
    """The Keras model (imports TensorFlow), called under a lock."""

    def __init__(self, path: Path):
        from clothclf.modeling.models import load_model, with_trust_outputs

        self._model = with_trust_outputs(load_model(str(path)))
        self._lock = threading.Lock()
        self.input_size = int(self._model.input_shape[1])
        self.num_outputs = int(self._model.output["probabilities"].shape[-1])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run(batch).probabilities

    def run(self, batch: np.ndarray, *, feature_map: bool = False) -> ModelOutputs:
        """Probabilities, pooled features and (when asked) the last feature map."""
        with self._lock:
            out = self._model.predict_on_batch(batch)
        arrays = {name: np.asarray(value, dtype=np.float32) for name, value in out.items()}
        return ModelOutputs(
            arrays["probabilities"], arrays["features"], arrays["feature_map"] if feature_map else None
        )
