"""Evaluation: metrics, per-image prediction rows, evaluating a classifier on a split, Plotly figures
(no TensorFlow)."""
