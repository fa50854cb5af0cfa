"""The dataset's own mistakes: label issues, near-duplicates (leaks across splits first) and outliers.

Every labelled photo of every split gets out-of-fold class probabilities from a k-fold logistic
regression on its frozen backbone features (:func:`out_of_fold_probabilities`: seconds, not a
fine-tuning run). Label issues are what cleanlab's confident learning finds in them, ranked most
likely first, each with the given label, the suggested one (the out-of-fold answer) and cleanlab's
label quality score (lower: more likely wrong). Duplicates are photos with the same bytes or features
this close (cosine similarity of centred features: the same photo re-encoded, resized or lightly
cropped); groups that leak a training photo into validation or test come first. Outliers are photos
far from every other (the 1% with the largest distance to their k-th neighbour in feature space).

:func:`find_issues` works on features already computed; :func:`dataset_issues` computes them with a
run's frozen extractor (:mod:`clothclf.training.frozen_features`, imported when called) first.
No Streamlit; TensorFlow only inside :func:`dataset_issues`, and only when the extractor is not cached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clothclf.config import Paths
from clothclf.data.datasets import Dataset
from clothclf.data.layout import SPLITS

#: ``progress(fraction done, what is being done)``.
ProgressHook = Callable[[float, str], None]
#: Splits a duplicate leaks a training photo into.
HELD_OUT = ("validation", "test")


@dataclass(frozen=True)
class IssueSettings:
    """How the finder works: folds of the out-of-fold head, duplicate threshold, outlier rule."""

    folds: int = 5
    penalty: float = 0.03  # L2 weight per photo on standardised features: C = 1 / (penalty * photos)
    duplicate_similarity: float = 0.9
    outlier_neighbours: int = 10
    outlier_share: float = 0.01  # the most isolated photos reported, as a share of all
    seed: int = 0


@dataclass(frozen=True)
class LabelIssue:
    """A photo whose label is likely wrong: given label, suggested label, label quality (lower: worse)."""

    file: str
    split: str
    given: str
    suggested: str
    score: float


@dataclass(frozen=True)
class DuplicateGroup:
    """Photos that are the same picture; ``similarity`` is the highest between two of them (1: same bytes)."""

    files: tuple[str, ...]
    splits: tuple[str, ...]
    similarity: float

    @property
    def leak(self) -> bool:
        """Whether a training photo is also in validation or test."""
        return "train" in self.splits and any(s in self.splits for s in HELD_OUT)


@dataclass(frozen=True)
class Outlier:
    """A photo unlike the others: ``score`` is the cosine distance to its k-th nearest photo."""

    file: str
    split: str
    score: float


@dataclass(frozen=True)
class DataIssues:
    """What :func:`find_issues` found; files are relative to the dataset folder."""

    label_issues: tuple[LabelIssue, ...]
    duplicates: tuple[DuplicateGroup, ...]
    outliers: tuple[Outlier, ...]
    photos: int = 0
    suggested: dict[str, str] = field(default_factory=dict)  # every photo's out-of-fold answer

    def to_json(self) -> dict:
        """``{"label_issues": [...], "duplicates": [...], "outliers": [...]}`` as the CLI prints it."""
        return {
            "label_issues": [
                {
                    "file": i.file,
                    "split": i.split,
                    "given": i.given,
                    "suggested": i.suggested,
                    "score": i.score,
                }
                for i in self.label_issues
            ],
            "duplicates": [
                {"files": list(d.files), "splits": list(d.splits), "similarity": d.similarity}
                for d in self.duplicates
            ],
            "outliers": [{"file": o.file, "split": o.split, "score": o.score} for o in self.outliers],
        }

    @classmethod
    def from_json(cls, values: dict, photos: int = 0, suggested: dict[str, str] | None = None) -> DataIssues:
        """Inverse of :meth:`to_json` (the photo count and suggestions are not in it: given apart)."""
        return cls(
            tuple(LabelIssue(**row) for row in values["label_issues"]),
            tuple(
                DuplicateGroup(tuple(row["files"]), tuple(row["splits"]), row["similarity"])
                for row in values["duplicates"]
            ),
            tuple(Outlier(**row) for row in values["outliers"]),
            photos,
            dict(suggested or {}),
        )

    @property
    def leaks(self) -> tuple[DuplicateGroup, ...]:
        """The duplicate groups across training and validation or test."""
        return tuple(d for d in self.duplicates if d.leak)


@dataclass(frozen=True)
class PooledFeatures:
    """Every split's features in one array, with labels, relative files and the split of each row."""

    features: np.ndarray  # (n, d) float32
    labels: np.ndarray  # (n,) int
    files: tuple[str, ...]
    splits: tuple[str, ...]


def pool_features(by_split: dict) -> PooledFeatures:
    """One :class:`PooledFeatures` of ``{split: clothclf.data.features.Features}`` (splits in order)."""
    names = [s for s in SPLITS if s in by_split and len(by_split[s].labels)]
    if not names:
        return PooledFeatures(np.zeros((0, 1), np.float32), np.zeros(0, int), (), ())
    return PooledFeatures(
        np.concatenate([by_split[s].features for s in names]).astype(np.float32),
        np.concatenate([by_split[s].labels for s in names]).astype(int),
        tuple(Path(f).as_posix() for s in names for f in by_split[s].files),
        tuple(s for s in names for _ in by_split[s].files),
    )


def _report(progress: ProgressHook | None, done: float, what: str) -> None:
    if progress is not None:
        progress(min(max(done, 0.0), 1.0), what)


def out_of_fold_probabilities(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    settings: IssueSettings = IssueSettings(),
    progress: ProgressHook | None = None,
) -> np.ndarray:
    """Each photo's class probabilities from a logistic regression fitted on the other folds
    (stratified k-fold; standardised features), so no photo is scored by a model that saw its label."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    smallest = int(np.bincount(labels, minlength=num_classes)[np.unique(labels)].min())
    folds = StratifiedKFold(max(2, min(settings.folds, smallest)), shuffle=True, random_state=settings.seed)
    probs = np.zeros((len(labels), num_classes), np.float32)
    for number, (fit_rows, held_rows) in enumerate(folds.split(features, labels)):
        _report(progress, number / folds.n_splits, f"out-of-fold head, fold {number + 1} of {folds.n_splits}")
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=1 / (settings.penalty * len(fit_rows)), max_iter=300)
        )
        model.fit(features[fit_rows], labels[fit_rows])
        probs[np.ix_(held_rows, model.classes_)] = model.predict_proba(features[held_rows])
    return probs


def find_label_issues(
    pooled: PooledFeatures, probs: np.ndarray, class_names: Sequence[str]
) -> tuple[LabelIssue, ...]:
    """The photos cleanlab's confident learning flags, most likely wrong first (by self-confidence)."""
    import cleanlab.filter
    import cleanlab.rank

    if len(np.unique(pooled.labels)) < 2:
        return ()
    ranked = cleanlab.filter.find_label_issues(
        pooled.labels, probs, return_indices_ranked_by="self_confidence"
    )
    scores = cleanlab.rank.get_label_quality_scores(pooled.labels, probs, method="self_confidence")
    suggested = probs.argmax(axis=1)
    return tuple(
        LabelIssue(
            pooled.files[i],
            pooled.splits[i],
            class_names[pooled.labels[i]],
            class_names[suggested[i]],
            round(float(scores[i]), 6),
        )
        for i in ranked
    )


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Features centred on their mean and scaled to unit length (cosine similarity is then a dot product)."""
    centred = features - features.mean(axis=0, keepdims=True)
    return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)


#: Rows of the similarity matrix computed at a time (512 x 4,000 photos: 8 MB).
SIMILARITY_CHUNK = 512


def similar_pairs(unit: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """(i, j, similarity) of every pair i < j whose cosine similarity is at least ``threshold``,
    computed a block of rows at a time (memory: one block, never the whole matrix)."""
    pairs: list[tuple[int, int, float]] = []
    for start in range(0, len(unit), SIMILARITY_CHUNK):
        block = unit[start : start + SIMILARITY_CHUNK] @ unit.T
        rows, cols = np.nonzero(block >= threshold)
        for r, c in zip(rows, cols):
            if c > start + r:
                pairs.append((start + int(r), int(c), float(block[r, c])))
    return pairs


def byte_digests(root: Path, files: Sequence[str]) -> list[str]:
    """A digest of each file's bytes (exact duplicates share one)."""
    return [hashlib.blake2b((Path(root) / f).read_bytes(), digest_size=16).hexdigest() for f in files]


def _exact_pairs(digests: Sequence[str]) -> list[tuple[int, int, float]]:
    first: dict[str, int] = {}
    pairs = []
    for i, digest in enumerate(digests):
        if digest in first:
            pairs.append((first[digest], i, 1.0))
        else:
            first[digest] = i
    return pairs


def _groups(n: int, pairs: list[tuple[int, int, float]]) -> list[tuple[list[int], float]]:
    """Connected photos (union-find over the pairs) and the highest similarity inside each group."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        parent[root(i)] = root(j)
    members: dict[int, list[int]] = {}
    best: dict[int, float] = {}
    for i, _, similarity in pairs:
        best[root(i)] = max(best.get(root(i), 0.0), similarity)
    for i in range(n):
        members.setdefault(root(i), []).append(i)
    return [(rows, best[r]) for r, rows in members.items() if len(rows) > 1]


def find_duplicates(
    pooled: PooledFeatures, root: Path, threshold: float = IssueSettings.duplicate_similarity
) -> tuple[DuplicateGroup, ...]:
    """Groups of the same photo (same bytes, or features at least ``threshold`` alike): leaks between
    training and validation/test first, then the most similar."""
    pairs = _exact_pairs(byte_digests(root, pooled.files)) + similar_pairs(
        unit_rows(pooled.features), threshold
    )
    groups = [
        DuplicateGroup(
            tuple(pooled.files[i] for i in rows),
            tuple(pooled.splits[i] for i in rows),
            round(min(similarity, 1.0), 6),
        )
        for rows, similarity in _groups(len(pooled.files), pairs)
    ]
    return tuple(sorted(groups, key=lambda g: (not g.leak, -g.similarity, g.files)))


def neighbour_distances(unit: np.ndarray, k: int) -> np.ndarray:
    """Cosine distance of each row to its k-th nearest other row (blocks of rows at a time)."""
    k = max(1, min(k, len(unit) - 1))
    distances = np.zeros(len(unit), np.float32)
    for start in range(0, len(unit), SIMILARITY_CHUNK):
        block = unit[start : start + SIMILARITY_CHUNK] @ unit.T
        block[np.arange(len(block)), start + np.arange(len(block))] = -np.inf  # not itself
        kth = -np.partition(-block, k - 1, axis=1)[:, k - 1]
        distances[start : start + len(block)] = 1.0 - kth
    return distances


def find_outliers(pooled: PooledFeatures, settings: IssueSettings = IssueSettings()) -> tuple[Outlier, ...]:
    """The photos farthest from their k-th nearest photo (``settings.outlier_share`` of them, at least
    one), farthest first: a ranking to look at, not a verdict."""
    if len(pooled.files) < 3:
        return ()
    distance = neighbour_distances(unit_rows(pooled.features), settings.outlier_neighbours)
    count = max(1, round(settings.outlier_share * len(distance)))
    order = np.argsort(-distance, kind="stable")[:count]
    return tuple(Outlier(pooled.files[i], pooled.splits[i], round(float(distance[i]), 6)) for i in order)


def find_issues(
    dataset: Dataset,
    by_split: dict,
    settings: IssueSettings = IssueSettings(),
    progress: ProgressHook | None = None,
) -> DataIssues:
    """Label issues, duplicates and outliers of ``dataset`` from its features ``{split: Features}``."""
    pooled = pool_features(by_split)
    if len(pooled.files) < 2:
        return DataIssues((), (), (), len(pooled.files))
    num_classes = len(dataset.class_names)

    def head_progress(done: float, what: str) -> None:
        _report(progress, 0.1 + 0.7 * done, what)

    probs = out_of_fold_probabilities(pooled.features, pooled.labels, num_classes, settings, head_progress)
    _report(progress, 0.8, "label issues")
    issues = find_label_issues(pooled, probs, dataset.class_names)
    _report(progress, 0.85, "duplicates")
    duplicates = find_duplicates(pooled, dataset.root, settings.duplicate_similarity)
    _report(progress, 0.95, "outliers")
    outliers = find_outliers(pooled, settings)
    _report(progress, 1.0, "done")
    suggested = {f: dataset.class_names[i] for f, i in zip(pooled.files, probs.argmax(axis=1))}
    return DataIssues(issues, duplicates, outliers, len(pooled.files), suggested)


def dataset_issues(
    dataset: Dataset,
    model_dir: str | Path | None = None,
    paths: Paths | None = None,
    settings: IssueSettings = IssueSettings(),
    progress: ProgressHook | None = None,
) -> tuple[DataIssues, PooledFeatures]:
    """:func:`find_issues` on the features of the frozen extractor of ``model_dir``'s backbone (default:
    the shipped model's), read from the feature cache or computed into it (progress up to 60%)."""
    from clothclf.training.frozen_features import dataset_features

    paths = paths or Paths.from_env()

    def features_progress(done: float, what: str) -> None:
        _report(progress, 0.6 * done, what)

    by_split = dataset_features(dataset, model_dir, paths, features_progress)

    def finder_progress(done: float, what: str) -> None:
        _report(progress, 0.6 + 0.4 * done, what)

    return find_issues(dataset, by_split, settings, finder_progress), pool_features(by_split)


def embedding_map(features: np.ndarray) -> np.ndarray:
    """A 2-D projection of the features (their first two principal components), one row per photo."""
    if len(features) < 2:
        return np.zeros((len(features), 2), np.float32)
    centred = features - features.mean(axis=0, keepdims=True)
    _, _, components = np.linalg.svd(centred[:: max(1, len(centred) // 2000)], full_matrices=False)
    return (centred @ components[:2].T).astype(np.float32)


def format_issues(issues: DataIssues, top: int = 10) -> str:
    """A short summary and the top rows of each kind, for people."""
    leaks = issues.leaks
    lines = [
        f"{issues.photos} photos: {len(issues.label_issues)} label issues, {len(issues.duplicates)} duplicate "
        f"groups ({len(leaks)} across train and validation/test), {len(issues.outliers)} outliers",
    ]
    if issues.label_issues:
        lines += ["", "label issues (most likely first):"]
        lines += [
            f"  {i.score:.3f}  {i.file}  given {i.given}, suggested {i.suggested}"
            for i in issues.label_issues[:top]
        ]
    if issues.duplicates:
        lines += ["", "duplicates (leaks first):"]
        lines += [
            f"  {d.similarity:.3f}  " + "  ".join(d.files) + ("  [leak]" if d.leak else "")
            for d in issues.duplicates[:top]
        ]
    if issues.outliers:
        lines += ["", "outliers (farthest first):"]
        lines += [f"  {o.score:.3f}  {o.file}" for o in issues.outliers[:top]]
    return "\n".join(lines)


def overlay_metrics(
    rows: Sequence[dict], overlay_file: str | Path, root: Path, class_names: Sequence[str]
) -> dict | None:
    """Metrics of evaluated ``rows`` (files relative to the dataset folder ``root``) on the labels an
    overlay corrects (its exclusions left out), or None when it changes none of these photos.
    :class:`~clothclf.data.overlay.OverlayError` if it is corrupt or stale."""
    from clothclf.data.overlay import check_overlay, corrected_labels, read_overlay
    from clothclf.evaluation.metrics import compute_metrics
    from clothclf.evaluation.predictions import prediction_arrays

    overlay = read_overlay(overlay_file)
    check_overlay(overlay, root, tuple(class_names), str(overlay_file))
    files = tuple(str(row["file"]) for row in rows)
    if not {d.file for d in overlay.changes()} & set(files):
        return None
    labels, probs = prediction_arrays(rows, list(class_names))
    pairs = corrected_labels(files, tuple(int(x) for x in labels), overlay, tuple(class_names))
    kept = [i for i, (_, new) in enumerate(pairs) if new is not None]
    corrected = np.asarray([pairs[i][1] for i in kept], dtype=int)
    metrics = compute_metrics(corrected, probs[kept], list(class_names))
    changed = sum(1 for old, new in pairs if new != old)
    return {**metrics, "overlay_digest": overlay.digest(), "photos_changed": changed}
