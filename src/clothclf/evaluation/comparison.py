"""Paired comparison of two classifiers on the same images: exact McNemar test and Wilson intervals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / total``."""
    if total < 1 or not 0 <= correct <= total:
        raise ValueError(f"need 0 <= correct <= total and total >= 1, not {correct} of {total}")
    interval = binomtest(correct, total).proportion_ci(confidence, method="wilson")
    return float(interval.low), float(interval.high)


@dataclass(frozen=True)
class PairedComparison:
    """Two classifiers' answers on the same ``n`` images: each one's accuracy, the discordant pairs
    (only ``a`` right, only ``b`` right) and the exact two-sided McNemar p-value."""

    n: int
    correct_a: int
    correct_b: int
    only_a: int
    only_b: int
    p_value: float

    def accuracy(self, which: str) -> float:
        """Accuracy of "a" or "b"."""
        return (self.correct_a if which == "a" else self.correct_b) / self.n

    def interval(self, which: str, confidence: float = 0.95) -> tuple[float, float]:
        """Wilson interval of the accuracy of "a" or "b"."""
        return wilson_interval(self.correct_a if which == "a" else self.correct_b, self.n, confidence)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: the discordant pairs against a fair coin (1.0 without any)."""
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    return float(binomtest(min(only_a, only_b), discordant, 0.5).pvalue)


def compare_paired(correct_a: np.ndarray, correct_b: np.ndarray) -> PairedComparison:
    """Compare two boolean arrays of per-image correctness (same images, same order)."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"need two equally long, non-empty 1-d arrays, not {a.shape} and {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return PairedComparison(len(a), int(a.sum()), int(b.sum()), only_a, only_b, mcnemar_exact(only_a, only_b))


def format_p(p_value: float) -> str:
    """A p-value for a table: three significant digits, or "< 0.001"."""
    return "< 0.001" if p_value < 1e-3 else f"{p_value:.3g}"
