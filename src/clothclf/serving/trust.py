"""When to trust an answer: an out-of-distribution score and a status, ``accept``, ``review`` or ``unknown``.

NumPy only (serving stays TensorFlow-free). The score combines three signals of the model's own pooled
backbone features, measured on the shipped model (``scripts/benchmark_trust.py``):

- **distance**: 1 - the cosine similarity of the k-th nearest training photo (L2-normalised features,
  projected on their top ``BANK_DIMS`` singular vectors). It separates photos without a garment
  almost perfectly; it counts only beyond the value ``1 - unknown_rate`` of validation photos reach.
- **class distance**: the same k-th neighbour similarity after centring and keeping the top
  ``CLASS_DIMS`` principal components, where the classes' structure dominates; with
- **energy**: ``-logsumexp(logits)`` (Liu et al., 2020), both better than max-softmax at garments of
  kinds the model does not know.

``ood_score = z(class distance) + z(energy) + 10 * max(0, u(distance) - 1)`` with ``z`` standardised
on the validation photos and ``u`` = 1 at the validation quantile ``1 - unknown_rate``. Every number
is fitted on the training photos (the bank) and the validation photos (scales and thresholds).
``unknown``: ``ood_score`` above the value ``unknown_rate`` of validation photos exceed; ``review``:
confidence below the lowest threshold at which accepted validation answers are ``accept_accuracy``
correct; else ``accept``. Runs saved before this have no bank: status from confidence alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from clothclf.errors import RunError

STATUSES = ("accept", "review", "unknown")
#: Share of validation photos set aside as unknown when the threshold is fitted.
UNKNOWN_RATE = 0.02
#: The accuracy accepted answers should reach on validation (the run setting's default).
DEFAULT_ACCEPT_ACCURACY = 0.97
#: Without a fitted threshold (runs saved before trust scores), answers below this are ``review``.
CONFIDENCE_ONLY_REVIEW = 0.5
NEIGHBOUR = 10  # k: the k-th nearest training photo
BANK_DIMS = 256
CLASS_DIMS = 64
#: Training photos added to the Gram matrix at a time when the bank is built.
GRAM_CHUNK = 1024
#: Query-by-bank similarities computed at a time (4 bytes each: 8 MB), whatever the number of photos.
SIMILARITY_BLOCK = 2 * 1024 * 1024
#: How far beyond its validation quantile the distance must be to outweigh everything else.
DISTANCE_WEIGHT = 10.0


@dataclass(frozen=True)
class Thresholds:
    """``unknown`` at or above ``unknown`` ood_score (None: no score); ``review`` below ``review`` confidence."""

    review: float
    unknown: float | None = None

    def status(self, confidence: float, ood_score: float | None) -> str:
        """``unknown``, ``review`` or ``accept`` for one answer."""
        if self.unknown is not None and ood_score is not None and ood_score >= self.unknown:
            return "unknown"
        return "review" if confidence < self.review else "accept"


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, as float32 (one new array)."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _kth_distance(queries: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """1 - cosine similarity of each (unit) query's k-th most similar (unit) bank row, for a block of
    queries at a time: memory holds :data:`SIMILARITY_BLOCK` similarities, not queries x bank."""
    k = min(k, bank.shape[0])
    rows = max(1, SIMILARITY_BLOCK // max(bank.shape[0], 1))
    blocks = [
        1.0 - np.partition(queries[start : start + rows] @ bank.T, -k, axis=1)[:, -k]
        for start in range(0, len(queries), rows)
    ]
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def energy(logits: np.ndarray) -> np.ndarray:
    """``-logsumexp(logits)`` per row: higher = less like the training photos."""
    top = logits.max(axis=1)
    return -(top + np.log(np.exp(logits - top[:, None]).sum(axis=1)))


@dataclass(frozen=True)
class FeatureBank:
    """The training photos' features, compact, and the scales that turn distances into ``ood_score``."""

    basis: np.ndarray  # (d_features, d_bank): top right singular vectors of the unit training features
    photos: np.ndarray  # (n, d_bank) unit rows
    center: np.ndarray  # (d_bank,) mean of ``photos``
    class_basis: np.ndarray  # (d_bank, d_class) top principal components of the centred photos
    class_photos: np.ndarray  # (n, d_class) unit rows
    scales: np.ndarray  # class distance mean, std; energy mean, std; distance median, quantile
    k: int = NEIGHBOUR

    def parts(self, features: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, ...]:
        """(distance, class distance, energy) of each row of pooled ``features`` and ``logits``."""
        queries = _unit(_unit(features) @ self.basis)
        distance = _kth_distance(queries, self.photos, self.k)
        class_queries = _unit((queries - self.center) @ self.class_basis)
        return distance, _kth_distance(class_queries, self.class_photos, self.k), energy(logits)

    def ood_scores(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Higher = less like the training photos (see the module's formula)."""
        distance, class_distance, energies = self.parts(features, logits)
        near_mean, near_std, energy_mean, energy_std, median, high = (float(v) for v in self.scales)
        beyond = np.maximum(0.0, (distance - median) / max(high - median, 1e-6) - 1.0)
        return (
            (class_distance - near_mean) / near_std
            + (energies - energy_mean) / energy_std
            + DISTANCE_WEIGHT * beyond
        )

    def save(self, path: Path) -> None:
        """Write as ``.npz`` (float16 photos: about 2 MB for 3,000 training photos)."""
        arrays = {k: v for k, v in asdict(self).items() if k != "k"}
        arrays["photos"], arrays["class_photos"] = (
            arrays[n].astype(np.float16) for n in ("photos", "class_photos")
        )
        arrays["basis"] = arrays["basis"].astype(np.float16)
        np.savez(path, k=np.asarray(self.k), **arrays)

    @classmethod
    def load(cls, path: Path) -> FeatureBank:
        """Read a bank written by :meth:`save` (as float32, for fast matrix products)."""
        try:
            with np.load(path) as data:
                arrays = {name: data[name].astype(np.float32) for name in data.files if name != "k"}
                return cls(**arrays, k=int(data["k"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunError(f"{path}: not a clothclf feature bank ({exc})") from exc


def _chunks(rows: np.ndarray) -> Iterator[np.ndarray]:
    return (rows[start : start + GRAM_CHUNK] for start in range(0, len(rows), GRAM_CHUNK))


def top_right_singular_vectors(
    rows: np.ndarray, count: int, transform: Callable[[np.ndarray], np.ndarray] = np.asarray
) -> np.ndarray:
    """(d, count): the top right singular vectors of ``transform(rows)`` (n, d), as columns, largest first.

    The eigenvectors of the (d, d) Gram matrix, summed a chunk of rows at a time (each transformed as it
    comes): memory is O(d²) whatever the number of photos, where an SVD needs several copies of them."""
    gram = np.zeros((rows.shape[1], rows.shape[1]), np.float64)
    for chunk in _chunks(rows):
        chunk = transform(chunk)
        gram += chunk.T @ chunk
    vectors = np.linalg.eigh(gram.astype(np.float32))[1]
    return np.ascontiguousarray(vectors[:, ::-1][:, :count])


def build_bank(
    train_features: np.ndarray, dims: int = BANK_DIMS, class_dims: int = CLASS_DIMS
) -> FeatureBank:
    """The compact bank of the training photos' pooled features (scales still unset), built a chunk
    of photos at a time: memory holds the features and their (n, ``dims``) projection."""
    basis = top_right_singular_vectors(train_features, dims, _unit)
    basis = basis.astype(np.float16).astype(np.float32)  # as saved
    photos = np.concatenate([_unit(_unit(chunk) @ basis) for chunk in _chunks(train_features)])
    center = photos.mean(axis=0)
    class_basis = top_right_singular_vectors(photos, class_dims, lambda chunk: chunk - center)
    class_photos = np.concatenate([_unit((chunk - center) @ class_basis) for chunk in _chunks(photos)])
    for rows in (photos, class_photos):
        rows[...] = rows.astype(np.float16)  # fit what serving uses (saved as float16), in place
    unset = np.asarray([0, 1, 0, 1, 0, 1], np.float32)
    return FeatureBank(
        basis, photos, center.astype(np.float32), class_basis.astype(np.float32), class_photos, unset
    )


def fit_scales(
    bank: FeatureBank, features: np.ndarray, logits: np.ndarray, unknown_rate: float
) -> FeatureBank:
    """The bank with its scales fitted on validation photos' features and logits."""
    distance, class_distance, energies = bank.parts(features, logits)
    scales = [
        class_distance.mean(),
        max(class_distance.std(), 1e-6),
        energies.mean(),
        max(energies.std(), 1e-6),
        np.median(distance),
        np.quantile(distance, 1.0 - unknown_rate),
    ]
    return FeatureBank(**{**vars(bank), "scales": np.asarray(scales, np.float32)})


def fit_review_confidence(confidence: np.ndarray, correct: np.ndarray, accept_accuracy: float) -> float:
    """The lowest confidence at which answers at or above it are ``accept_accuracy`` correct (1.0 if none)."""
    order = np.argsort(-confidence, kind="stable")
    hits = np.cumsum(np.asarray(correct, bool)[order])
    accuracy = hits / np.arange(1, len(order) + 1)
    reached = np.flatnonzero(accuracy >= accept_accuracy)
    return float(confidence[order[reached[-1]]]) if len(reached) else 1.0


def fit_thresholds(
    ood_scores: np.ndarray,
    confidence: np.ndarray,
    correct: np.ndarray,
    accept_accuracy: float,
    unknown_rate: float,
) -> Thresholds:
    """Both thresholds from validation answers: ``unknown_rate`` of them unknown, the rest by confidence."""
    unknown = float(np.quantile(ood_scores, 1.0 - unknown_rate))
    known = ood_scores < unknown
    review = fit_review_confidence(confidence[known], correct[known], accept_accuracy)
    return Thresholds(review=review, unknown=unknown)


def validation_summary(
    thresholds: Thresholds, ood_scores: np.ndarray, confidence: np.ndarray, correct: np.ndarray
) -> dict:
    """Shares of validation answers per status and the accuracy of the accepted ones."""
    status = np.asarray([thresholds.status(float(c), float(s)) for c, s in zip(confidence, ood_scores)])
    accepted = status == "accept"
    return {
        "photos": int(len(status)),
        **{name: float(np.mean(status == name)) for name in STATUSES},
        "accepted_accuracy": float(np.mean(np.asarray(correct, bool)[accepted])) if accepted.any() else None,
    }


def fit_trust(
    train_features: np.ndarray,
    val_features: np.ndarray,
    val_logits: np.ndarray,
    val_confidence: np.ndarray,
    val_correct: np.ndarray,
    *,
    accept_accuracy: float = DEFAULT_ACCEPT_ACCURACY,
    unknown_rate: float = UNKNOWN_RATE,
) -> tuple[FeatureBank, dict]:
    """The feature bank of the training photos and the ``trust`` record of ``run.json``, fitted on validation."""
    bank = fit_scales(build_bank(train_features), val_features, val_logits, unknown_rate)
    scores = bank.ood_scores(val_features, val_logits)
    thresholds = fit_thresholds(scores, val_confidence, val_correct, accept_accuracy, unknown_rate)
    record = {
        "unknown_threshold": thresholds.unknown,
        "review_confidence": thresholds.review,
        "accept_accuracy": accept_accuracy,
        "unknown_rate": unknown_rate,
        "score": f"kNN (k={bank.k}) distance and class distance of pooled features, plus energy",
        "validation": validation_summary(thresholds, scores, val_confidence, val_correct),
    }
    return bank, record


def thresholds_of(record: dict | None) -> Thresholds:
    """The thresholds recorded in ``run.json``'s ``trust`` (confidence alone when there is none)."""
    if not record:
        return Thresholds(review=CONFIDENCE_ONLY_REVIEW)
    try:
        return Thresholds(
            review=float(record["review_confidence"]), unknown=float(record["unknown_threshold"])
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"run.json: a damaged trust record ({exc})") from exc
