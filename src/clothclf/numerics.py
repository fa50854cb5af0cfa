"""NumPy maths shared by serving, evaluation and training: softmax and temperature scaling.

It sits below all three (it imports NumPy alone, and SciPy only inside :func:`fit_temperature`), so the
serving path applies a run's temperature without importing anything from training.

Temperature scaling: one number, fitted on the validation set, that makes confidences honest. A
softmax trained with label smoothing is under-confident (its 70% answers are right more often than 70%
of the time); dividing the log-probabilities by a temperature ``T`` < 1 sharpens them, ``T`` > 1
softens them. The top class never changes, so accuracy is untouched (Guo et al., 2017, "On
Calibration of Modern Neural Networks").
"""

from __future__ import annotations

import numpy as np

#: Temperatures searched by :func:`fit_temperature` (log-uniform bounds).
TEMPERATURE_RANGE = (0.05, 20.0)
#: Fewer validation images than this give no temperature (1.0): a handful, all right, would call
#: for near-certain answers everywhere.
MIN_CALIBRATION_IMAGES = 50
_FLOOR = 1e-12  # log(0) guard: a probability this small is already certain


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / temperature)`` row by row; the identity at ``temperature == 1``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, not {temperature}")
    if temperature == 1.0:
        return probs
    return softmax(np.log(np.clip(probs, _FLOOR, 1.0)) / temperature).astype(probs.dtype)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities of ``logits`` along the last axis (shifted by the row maximum, so never overflowing)."""
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _negative_log_likelihood(probs: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    scaled = apply_temperature(probs.astype(np.float64), temperature)
    return float(-np.mean(np.log(np.clip(scaled[np.arange(len(labels)), labels], _FLOOR, 1.0))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels`` under ``probs``
    (1.0 for fewer than ``MIN_CALIBRATION_IMAGES`` predictions)."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, dtype=int)
    if len(labels) < MIN_CALIBRATION_IMAGES:
        return 1.0
    low, high = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    result = minimize_scalar(
        lambda log_t: _negative_log_likelihood(probs, labels, float(np.exp(log_t))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))
