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

from clothclf.config import BACKENDS
from clothclf.data.images import DEFAULT_MAX_PIXELS, ImageInput, load_image
from clothclf.errors import ClothclfError, RunError
from clothclf.numerics import apply_temperature
from clothclf.runs import (
    CLASS_NAMES,
    HEAD_WEIGHTS,
    INT8_MODEL,
    KERAS_MODEL,
    LITERT_MODEL,
    SUMMARY,
    TRUST_FILE,
    model_files,
    read_class_names,
    read_summary,
    verify_model_files,
)
from clothclf.serving.explain import Explanation, activation_map, method_name
from clothclf.serving.runtime import (
    DenseHead,
    FeaturesThenHead,
    KerasRunner,
    LiteRTRunner,
    ModelOutputs,
    available_cpus,
    leave_cores_to_litert,
    mirror_averaged,
)
from clothclf.serving.trust import CONFIDENCE_ONLY_REVIEW, FeatureBank, Thresholds, thresholds_of

#: Images one worker of :meth:`Classifier.predict_stream` decodes and runs together.
CHUNK_SIZE = 8
#: The answer (and status) of a photo that is not one of the classes.
UNKNOWN = "unknown"


class ExplanationUnavailable(ClothclfError):
    """The model has no feature-map output or no NumPy head to explain its answers with."""


@dataclass(frozen=True)
class Prediction:
    """The answer for one image: the top label, its probability, the top k, every class's probability,
    whether to trust it (``status``: accept, review or unknown) and its out-of-distribution score
    (higher = less like the training photos; None for runs saved without a feature bank)."""

    label: str
    confidence: float
    top_k: tuple[tuple[str, float], ...]
    probabilities: dict[str, float] = field(repr=False)
    status: str = "accept"
    ood_score: float | None = None

    @property
    def answer(self) -> str:
        """What the photo is called: its class, or ``"unknown"`` when it is not one of the classes
        (``label`` then is the closest class)."""
        return UNKNOWN if self.status == UNKNOWN else self.label

    def to_dict(self) -> dict:
        """JSON-ready, in the column order of every results file: ``label`` (the answer: a class or
        ``"unknown"``), ``closest`` (the most probable class), confidence (of that class), status,
        ood_score and top_k as a list of {label, probability}."""
        return {
            "label": self.answer,
            "closest": self.label,
            "confidence": self.confidence,
            "status": self.status,
            "ood_score": self.ood_score,
            "top_k": [{"label": name, "probability": p} for name, p in self.top_k],
        }


@dataclass(frozen=True)
class Trust:
    """What a classifier judges its answers with: thresholds, and (for scored runs) the feature bank
    of its training photos and its head in NumPy (logits for the score, weights for explanations)."""

    thresholds: Thresholds = Thresholds(review=CONFIDENCE_ONLY_REVIEW)
    bank: FeatureBank | None = None
    head: DenseHead | None = None

    @property
    def scored(self) -> bool:
        """Whether answers get an ``ood_score`` (and can be ``unknown``)."""
        return self.bank is not None and self.head is not None and self.thresholds.unknown is not None


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
        trust: Trust | None = None,
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
        self.trust = trust or Trust()

    @property
    def trust_note(self) -> str | None:
        """None when answers are judged by the out-of-distribution score, else a sentence saying they are not."""
        if self.trust.scored:
            return None
        return (
            f"This model was saved without a feature bank: status comes from confidence alone (review below "
            f"{self.trust.thresholds.review:.0%}) and no photo is called unknown. "
            f"`clothclf trust --model {self.model_dir}` adds it."
        )

    def __repr__(self) -> str:
        return (
            f"Classifier({str(self.model_dir)!r}, backend={self.backend!r}, "
            f"image_size={self.image_size}, classes={len(self.class_names)}, tta={self.tta}, "
            f"temperature={self.temperature:.3g})"
        )

    def load(self, image: ImageInput) -> np.ndarray:
        """Decode ``image`` exactly as training did, at this model's input size."""
        return load_image(image, self.image_size, self.max_pixels)

    def outputs(self, pixels: np.ndarray, feature_map: bool = False) -> ModelOutputs:
        """Calibrated probabilities (averaged with the mirror image under TTA), the pooled features and,
        if asked, the last feature map of a batch of decoded ``uint8`` images (n, size, size, 3)."""
        return self._outputs(pixels, self._run, feature_map)

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

    def _outputs(
        self, pixels: np.ndarray, runner: Callable[[np.ndarray], np.ndarray], feature_map: bool = False
    ) -> ModelOutputs:
        expected = (self.image_size, self.image_size, 3)
        if pixels.ndim != 4 or pixels.shape[1:] != expected:
            raise ValueError(
                f"expected images of shape (n, {', '.join(map(str, expected))}), not {pixels.shape}"
            )
        x = pixels.astype(np.float32)
        run = getattr(runner, "run", None)
        outputs = run(x, feature_map=feature_map) if run else ModelOutputs(runner(x))
        probs = outputs.probabilities
        if self.tta:
            probs = mirror_averaged(probs, runner, x)
        return ModelOutputs(apply_temperature(probs, self.temperature), outputs.features, outputs.feature_map)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities of a batch of decoded ``uint8`` images, (n, size, size, 3) -> (n, k).

        With test-time augmentation the probabilities are averaged with those of the mirror image;
        then they are temperature-scaled (see :mod:`clothclf.numerics`).
        """
        return self.outputs(pixels).probabilities

    def ood_scores(self, outputs: ModelOutputs) -> np.ndarray | None:
        """Out-of-distribution scores of a batch's outputs (None if this run has no feature bank).

        One photo at a time: a matrix product's last bits depend on the shape of the batch, and a
        photo's score must not depend on the photos batched with it."""
        if not self.trust.scored or outputs.features is None:
            return None
        bank, head = self.trust.bank, self.trust.head
        rows = [outputs.features[i : i + 1] for i in range(len(outputs.features))]
        return np.concatenate([bank.ood_scores(row, head.logits(row)) for row in rows])

    def _prediction(self, probs: np.ndarray, top_k: int, ood_score: float | None = None) -> Prediction:
        ood_score = None if ood_score is None else round(ood_score, 4)
        order = np.argsort(-probs, kind="stable")[: max(1, min(top_k, len(self.class_names)))]
        confidence = float(probs[order[0]])
        return Prediction(
            label=self.class_names[order[0]],
            confidence=confidence,
            top_k=tuple((self.class_names[i], float(probs[i])) for i in order),
            probabilities={name: float(p) for name, p in zip(self.class_names, probs)},
            status=self.trust.thresholds.status(confidence, ood_score),
            ood_score=ood_score,
        )

    def answers(
        self, pixels: np.ndarray, top_k: int = 3, runner: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> list[Prediction]:
        """Predictions (with status and ood_score) of a batch of decoded ``uint8`` images (by ``runner``,
        default the classifier's own)."""
        outputs = self._outputs(pixels, runner or self._run)
        scores = self.ood_scores(outputs)
        return [
            self._prediction(p, top_k, None if scores is None else float(scores[i]))
            for i, p in enumerate(outputs.probabilities)
        ]

    def predict(self, image: ImageInput, top_k: int = 3) -> Prediction:
        """Classify one image (path, bytes, file-like, PIL image or array)."""
        return self.answers(self.load(image)[None], top_k)[0]

    def predict_explained(self, image: ImageInput, top_k: int = 3) -> tuple[Prediction, Explanation]:
        """Classify one image and explain its top answer, in one run of the model."""
        head = self.trust.head
        outputs = self.outputs(self.load(image)[None], feature_map=True)
        if outputs.feature_map is None or head is None:
            raise ExplanationUnavailable(
                f"{self.model_dir}: this model cannot explain its answers (no feature map output or no "
                f"head.npz); `clothclf trust --model {self.model_dir}` adds them"
            )
        scores = self.ood_scores(outputs)
        prediction = self._prediction(
            outputs.probabilities[0], top_k, None if scores is None else float(scores[0])
        )
        index = self.class_names.index(prediction.label)
        heatmap = activation_map(outputs.feature_map[0], head, index)
        return prediction, Explanation(heatmap, prediction.label, method_name(head))

    def explain(self, image: ImageInput) -> Explanation:
        """Where the model looked for its top answer: a heatmap over the image as given (see
        :mod:`clothclf.serving.explain`)."""
        return self.predict_explained(image, top_k=1)[1]

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
        answers = iter(self.answers(np.stack(good), top_k, self._stream_runner()) if good else ())
        return [d if isinstance(d, ClothclfError) else next(answers) for d in decoded]

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


def _model_files(model_dir: Path, backend: str, summary: dict) -> tuple[str, tuple[Path, ...]]:
    """The backend to use (``auto`` resolved: the int8 model where ``run.json`` says it is served) and the
    model files it loads from ``model_dir``."""
    files = model_files(model_dir)
    if backend == "auto" and files.int8 is not None and summary.get("int8", {}).get("served"):
        backend = "litert-int8"
    if backend == "auto":
        backend = "litert" if files.litert or files.head_only else "keras"
    if backend == "litert-int8":
        if files.int8 is None:
            raise RunError(f"{model_dir}: no {INT8_MODEL} (run `clothclf export --int8 --model {model_dir}`)")
        return backend, (files.int8,)
    if backend == "keras":
        if files.keras is None:
            raise RunError(f"{model_dir}: no {LITERT_MODEL} nor {KERAS_MODEL}")
        return backend, (files.keras,)
    if files.litert is not None:
        return backend, (files.litert,)
    if files.features is not None and files.head is not None:
        return backend, (files.features, files.head)
    raise RunError(f"{model_dir}: no {LITERT_MODEL} (run `clothclf export --model {model_dir}`)")


def _load_runner(
    model_dir: Path, files: tuple[Path, ...], threads: int, pool_size: int
) -> LiteRTRunner | FeaturesThenHead | KerasRunner:
    """The runner of ``files`` once each matches its recorded digest; a file its format library
    refuses (a damaged one, whatever the library raises) is a :class:`RunError` naming it."""
    verify_model_files(model_dir, [file.name for file in files])
    try:
        if len(files) == 2:  # a head-only run: the extractor, then the NumPy head
            return FeaturesThenHead(LiteRTRunner(files[0], threads, pool_size), DenseHead(files[1]))
        if files[0].suffix == ".keras":
            return KerasRunner(files[0])
        return LiteRTRunner(files[0], threads, pool_size)  # the float or the int8 LiteRT model
    except ClothclfError:
        raise
    except Exception as exc:
        names = " and ".join(file.name for file in files)
        raise RunError(f"{model_dir}: cannot load {names} ({type(exc).__name__}: {exc})") from exc


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

    ``backend`` is ``"auto"`` (the int8 LiteRT model where ``run.json`` records it as served, else
    LiteRT when ``model.tflite`` exists, or ``features.tflite`` with ``head.npz`` as head-only runs save,
    else Keras), ``"litert"``, ``"litert-int8"`` (the full-integer
    ``model_int8.tflite`` that ``clothclf export --int8`` writes) or ``"keras"``. ``tta`` and
    ``temperature`` default to what the run recorded in ``run.json`` (no TTA, temperature 1 when
    absent). For LiteRT, ``num_threads`` (default: every available CPU) is per interpreter, and up to
    ``pool_size`` interpreters serve concurrent callers; :meth:`Classifier.predict_stream` (and so
    ``predict_batch``) runs one single-threaded interpreter per CPU instead, made on its first use.
    Loading leaves the CPUs to the model: NumPy's BLAS gets one thread in this process
    (:func:`~clothclf.serving.runtime.leave_cores_to_litert`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, not {backend!r}")
    if model_dir is None:
        from clothclf.config import Paths

        model_dir = Paths.from_env().default_model_dir
    model_dir = Path(model_dir)
    if not (model_dir / CLASS_NAMES).is_file():
        raise RunError(f"{model_dir}: not a clothclf model folder (no {CLASS_NAMES})")
    summary = read_summary(model_dir) if (model_dir / SUMMARY).is_file() else {}
    class_names = read_class_names(model_dir)
    backend, files = _model_files(model_dir, backend, summary)
    threads = num_threads or available_cpus()
    leave_cores_to_litert()
    runner = _load_runner(model_dir, files, threads, pool_size)
    stream_runner = None
    if threads > 1 and backend != "keras":  # predict_stream: one single-threaded interpreter per worker
        stream_runner = functools.partial(_load_runner, model_dir, files, 1, available_cpus())
    if runner.num_outputs != len(class_names):
        raise RunError(
            f"{model_dir}: the model has {runner.num_outputs} outputs but {CLASS_NAMES} {len(class_names)} classes"
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
        trust=load_trust(model_dir, summary),
    )


def load_trust(model_dir: Path, summary: dict) -> Trust:
    """The thresholds in ``run.json``, the feature bank and the NumPy head of a run folder (those present)."""
    head_file, bank_file = model_dir / HEAD_WEIGHTS, model_dir / TRUST_FILE
    head = DenseHead(head_file) if head_file.is_file() else None
    record = summary.get("trust")
    bank = FeatureBank.load(bank_file) if record and bank_file.is_file() else None
    thresholds = thresholds_of(record)
    if bank is None:
        thresholds = Thresholds(review=thresholds.review)
    elif head is not None and bank.basis.shape[0] != head.input_dim:
        raise RunError(f"{bank_file}: {bank.basis.shape[0]} features, the head expects {head.input_dim}")
    return Trust(thresholds, bank, head)
