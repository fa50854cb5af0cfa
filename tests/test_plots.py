"""Plotly figures are built from saved tables and show the numbers they are given."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from clothclf.evaluation import plots
from clothclf.evaluation.metrics import reliability_table

HISTORY = [
    {
        "phase": "head",
        "epoch": "1",
        "loss": "1.2",
        "accuracy": "0.5",
        "val_loss": "1.0",
        "val_accuracy": "0.6",
        "lr": "0.001",
    },
    {
        "phase": "head",
        "epoch": "2",
        "loss": "0.8",
        "accuracy": "0.7",
        "val_loss": "0.9",
        "val_accuracy": "0.65",
        "lr": "0.001",
    },
    {
        "phase": "fine_tune",
        "epoch": "3",
        "loss": "0.5",
        "accuracy": "0.8",
        "val_loss": "0.7",
        "val_accuracy": "0.75",
        "lr": "0.0001",
    },
]
PER_CLASS = {
    "red": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 10},
    "green": {"precision": 0.5, "recall": 0.6, "f1": 0.55, "support": 5},
}


def test_probability_bars_highlight_the_top_k():
    fig = plots.probability_bars({"a": 0.1, "b": 0.6, "c": 0.25, "d": 0.05}, top_k=2)
    bar = fig.data[0]
    assert isinstance(fig, go.Figure)
    assert list(bar.y) == ["d", "a", "c", "b"]
    assert list(bar.x) == [0.05, 0.1, 0.25, 0.6]
    assert [c == plots.ACCENT for c in bar.marker.color] == [False, False, True, True]


def test_training_curves_mark_the_phase_change():
    fig = plots.training_curves(HISTORY)
    names = {(t.name, t.xaxis) for t in fig.data}
    assert names == {("train", "x"), ("validation", "x"), ("train", "x2"), ("validation", "x2")}
    val_acc = next(t for t in fig.data if t.name == "validation" and t.xaxis == "x2")
    assert list(val_acc.y) == [0.6, 0.65, 0.75]
    assert [s.x0 for s in fig.layout.shapes] == [2.5, 2.5]  # one line per panel
    assert any(a.text == "fine-tune" for a in fig.layout.annotations)


def test_training_curves_with_missing_values():
    rows = [{"phase": "train", "epoch": "1", "loss": "1.0", "accuracy": "", "lr": "0.1"}]
    fig = plots.training_curves(rows)
    assert next(t for t in fig.data if t.name == "train" and t.xaxis == "x2").y == (None,)
    assert not fig.layout.shapes


def test_learning_rate_curve_is_log_scale():
    fig = plots.learning_rate_curve(HISTORY)
    assert fig.layout.yaxis.type == "log"
    assert list(fig.data[0].y) == [0.001, 0.001, 0.0001]


def test_row_normalize_handles_empty_rows():
    np.testing.assert_allclose(plots.row_normalize(np.array([[1, 3], [0, 0]])), [[0.25, 0.75], [0, 0]])


@pytest.mark.parametrize("normalize", [False, True])
def test_confusion_heatmap_has_a_clickable_point_per_cell(normalize):
    matrix = np.array([[3, 1], [0, 4]])
    fig = plots.confusion_heatmap(matrix, ["red", "green"], normalize=normalize)
    heatmap, cells = fig.data
    assert list(heatmap.text[0]) == (["75%", "25%"] if normalize else ["3", "1"])
    assert list(zip(cells.x, cells.y, cells.customdata)) == [
        ("red", "red", 3),
        ("green", "red", 1),
        ("red", "green", 0),
        ("green", "green", 4),
    ]


def test_learning_rate_curve_keeps_the_epochs_where_a_cosine_schedule_reaches_zero():
    history = [{"phase": "fine_tune", "epoch": e, "lr": lr} for e, lr in enumerate([1e-4, 5e-5, 0.0], 1)]
    fig = plots.learning_rate_curve(history)
    y = list(fig.data[0].y)
    assert len(y) == 3 and all(value is not None and value > 0 for value in y)  # drawable on a log axis
    assert y[2] < min(y[:2]) and list(fig.data[0].customdata) == [1e-4, 5e-5, 0.0]  # hover says 0


def test_reliability_diagram_plots_the_table():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=50)
    y = rng.integers(0, 3, 50)
    table = reliability_table(y, probs, n_bins=5)
    fig = plots.reliability_diagram(table)
    assert list(fig.data[0].y) == [row["accuracy"] for row in table]
    assert sum(c[0] for c in fig.data[0].customdata) == 50
    assert list(fig.data[0].text) == [str(row["count"]) for row in table]  # each bar says how many images


def test_per_class_and_comparison_bars():
    fig = plots.per_class_bars(PER_CLASS)
    assert [t.name for t in fig.data] == ["precision", "recall", "F1"]
    assert list(fig.data[2].y) == [0.85, 0.55]
    other = {"red": {"f1": 0.5}, "blue": {"f1": 0.7}}
    fig = plots.compare_f1(PER_CLASS, other, ("a", "b"))
    assert list(fig.data[0].x) == ["red", "green", "blue"]
    assert list(fig.data[0].y) == [0.85, 0.55, None]
    assert list(fig.data[1].y) == [0.5, None, 0.7]


def test_compare_curves_overlays_two_runs():
    fig = plots.compare_curves(HISTORY, HISTORY[:2], ("a", "b"))
    assert len(fig.data) == 8
    assert {t.name for t in fig.data} == {"a · validation", "a · train", "b · validation", "b · train"}
