"""Plotly figures of predictions, training histories and metrics.

Every function takes plain arrays, dicts or tables (as saved in a run folder) and returns a
``plotly.graph_objects.Figure``; the numbers are computed elsewhere (:mod:`clothclf.evaluation.metrics`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

ACCENT = "#E4572E"
MUTED = "#B8C4D6"
TRAIN = "#4C78A8"
VALID = "#E4572E"
RUN_COLORS = ("#4C78A8", "#E4572E")


def _layout(fig: go.Figure, height: int, **kwargs) -> go.Figure:
    kwargs.setdefault("margin", dict(l=10, r=10, t=40, b=10))
    fig.update_layout(height=height, **kwargs)
    return fig


def probability_bars(probabilities: Mapping[str, float], top_k: int = 3, compact: bool = False) -> go.Figure:
    """Horizontal bars of every class's probability, most likely on top, the top ``top_k`` highlighted.

    ``compact`` draws a small version without the probability axis (for cards in a grid).
    """
    items = sorted(probabilities.items(), key=lambda kv: kv[1])
    labels = [label for label, _ in items]
    values = [p for _, p in items]
    n = len(items)
    colors = [ACCENT if i >= n - top_k else MUTED for i in range(n)]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=labels,
            orientation="h",
            marker_color=colors,
            text=[f"{p:.0%}" if p >= 0.005 else "" for p in values],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    fig.update_xaxes(
        range=[0, 1.4 if compact else 1.15], tickformat=".0%", showgrid=not compact, visible=not compact
    )
    height = 20 + 22 * n if compact else 60 + 26 * n
    margin = dict(l=10, r=10, t=5, b=5) if compact else dict(l=10, r=10, t=10, b=10)
    return _layout(fig, height, margin=margin, showlegend=False)


def _column(rows: Sequence[Mapping[str, object]], key: str) -> list[float | None]:
    values: list[float | None] = []
    for row in rows:
        value = row.get(key)
        values.append(float(value) if value not in (None, "") else None)
    return values


def _phase_changes(rows: Sequence[Mapping[str, object]]) -> list[tuple[float, str]]:
    """(x position between epochs, name of the new phase) wherever the phase changes."""
    changes = []
    for previous, row in zip(rows, rows[1:]):
        if row.get("phase") != previous.get("phase"):
            changes.append((float(previous["epoch"]) + 0.5, str(row.get("phase"))))
    return changes


def training_curves(history: Sequence[Mapping[str, object]]) -> go.Figure:
    """Loss and accuracy per epoch, train vs validation, with a dashed line where fine-tuning starts.

    ``history`` rows have the columns of a run's ``history.csv`` (phase, epoch, loss, accuracy,
    val_loss, val_accuracy, lr); values may be strings.
    """
    epochs = _column(history, "epoch")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.08)
    for col, metric in ((1, "loss"), (2, "accuracy")):
        for key, name, color in ((metric, "train", TRAIN), (f"val_{metric}", "validation", VALID)):
            fig.add_trace(
                go.Scatter(
                    x=epochs,
                    y=_column(history, key),
                    mode="lines+markers",
                    name=name,
                    line_color=color,
                    legendgroup=name,
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
    for x, phase in _phase_changes(history):
        fig.add_vline(
            x=x,
            line_dash="dash",
            line_color="grey",
            annotation_text=phase.replace("_", "-"),
            annotation_position="top right",
        )
    fig.update_xaxes(title_text="epoch", dtick=1 if len(history) <= 20 else None)
    fig.update_yaxes(tickformat=".0%", range=[0, 1.02], row=1, col=2)
    return _layout(fig, 340, legend=dict(orientation="h", y=-0.25))


def learning_rate_curve(history: Sequence[Mapping[str, object]]) -> go.Figure:
    """The learning rate at the end of each epoch (log scale), with the phase changes marked.

    A rate of 0 (where a cosine schedule ends) has no place on a log axis: it is drawn as a hollow
    marker a decade below the smallest positive rate, and its hover text says 0.
    """
    rates = _column(history, "lr")
    positive = [rate for rate in rates if rate]
    floor = min(positive) / 10 if positive else 1e-6
    fig = go.Figure(
        go.Scatter(
            x=_column(history, "epoch"),
            y=[rate if rate is None or rate > 0 else floor for rate in rates],
            customdata=rates,
            mode="lines+markers",
            line_color=TRAIN,
            marker=dict(symbol=["circle-open" if rate == 0 else "circle" for rate in rates], size=8),
            hovertemplate="epoch %{x}: learning rate %{customdata:.3g}<extra></extra>",
        )
    )
    for x, _ in _phase_changes(history):
        fig.add_vline(x=x, line_dash="dash", line_color="grey")
    fig.update_xaxes(title_text="epoch", dtick=1 if len(history) <= 20 else None)
    fig.update_yaxes(title_text="learning rate", type="log", exponentformat="e")
    return _layout(fig, 260, title="Learning rate")


def row_normalize(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows of zeros stay zero): the share of each true class."""
    matrix = np.asarray(matrix, dtype=np.float64)
    sums = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, sums, out=np.zeros_like(matrix), where=sums > 0)


def confusion_heatmap(
    matrix: np.ndarray | Sequence[Sequence[int]], class_names: Sequence[str], normalize: bool = False
) -> go.Figure:
    """The confusion matrix (rows = true class, columns = predicted), counts or row shares.

    Cells carry an invisible marker each so that clicking a cell selects the point
    ``(x=predicted, y=true)`` in apps that listen to plot selections (heatmaps emit none).
    """
    counts = np.asarray(matrix)
    values = row_normalize(counts) if normalize else counts
    names = list(class_names)
    text = [[f"{v:.0%}" if normalize else f"{int(v)}" for v in row] for row in values]
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=names,
            y=names,
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            showscale=False,
            hoverinfo="skip",
        )
    )
    xs, ys = np.meshgrid(np.arange(len(names)), np.arange(len(names)))
    fig.add_trace(
        go.Scatter(
            x=[names[i] for i in xs.ravel()],
            y=[names[j] for j in ys.ravel()],
            customdata=counts.ravel(),
            mode="markers",
            marker=dict(symbol="square", size=28, opacity=0),
            hovertemplate="true %{y}, predicted %{x}: %{customdata} images<extra></extra>",
            showlegend=False,
        )
    )
    fig.update_xaxes(title_text="predicted", side="bottom", tickangle=-45)
    fig.update_yaxes(title_text="true", autorange="reversed")
    size = 180 + 44 * len(names)
    return _layout(fig, size, width=size + 40, clickmode="event+select", dragmode=False)


def reliability_diagram(table: Sequence[Mapping[str, float]]) -> go.Figure:
    """Accuracy against mean confidence per confidence bin (:func:`clothclf.evaluation.metrics.reliability_table`).

    Bars sit at each bin's range, labelled with how many images they hold; the diagonal is perfect
    calibration. Bars below it mean the model is over-confident there.
    """
    centers = [(row["low"] + row["high"]) / 2 for row in table]
    widths = [row["high"] - row["low"] for row in table]
    fig = go.Figure(
        [
            go.Bar(
                x=centers,
                y=[row["accuracy"] for row in table],
                width=widths,
                name="accuracy",
                marker_color=TRAIN,
                customdata=[[row["count"], row["confidence"]] for row in table],
                hovertemplate="accuracy %{y:.0%}<br>mean confidence %{customdata[1]:.0%}"
                "<br>%{customdata[0]} images<extra></extra>",
                text=[f"{row['count']}" for row in table],
                textposition="outside",
                cliponaxis=False,
            ),
            go.Scatter(
                x=[row["confidence"] for row in table],
                y=[row["confidence"] for row in table],
                mode="markers",
                name="mean confidence",
                marker=dict(color=ACCENT, size=8),
            ),
            go.Scatter(
                x=[0, 1], y=[0, 1], mode="lines", name="perfect", line=dict(color="grey", dash="dash")
            ),
        ]
    )
    fig.update_xaxes(title_text="confidence", range=[0, 1], tickformat=".0%")
    fig.update_yaxes(title_text="accuracy", range=[0, 1], tickformat=".0%")
    return _layout(fig, 380, legend=dict(orientation="h", y=-0.2), bargap=0.05)


def per_class_bars(per_class: Mapping[str, Mapping[str, float]]) -> go.Figure:
    """Grouped bars of precision, recall and F1 for each class (``metrics["per_class"]``)."""
    names = list(per_class)
    colors = {"precision": MUTED, "recall": TRAIN, "f1": ACCENT}
    fig = go.Figure(
        [
            go.Bar(
                x=names,
                y=[per_class[n][key] for n in names],
                name="F1" if key == "f1" else key,
                marker_color=color,
                hovertemplate="%{x}: %{y:.1%}<extra></extra>",
            )
            for key, color in colors.items()
        ]
    )
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    return _layout(fig, 340, barmode="group", legend=dict(orientation="h", y=1.12))


def compare_f1(
    per_class_a: Mapping[str, Mapping[str, float]],
    per_class_b: Mapping[str, Mapping[str, float]],
    names: tuple[str, str],
) -> go.Figure:
    """Per-class F1 of two runs side by side (classes of either run; missing ones are left empty)."""
    classes = list(dict.fromkeys([*per_class_a, *per_class_b]))
    fig = go.Figure(
        [
            go.Bar(
                x=classes,
                y=[per_class[c]["f1"] if c in per_class else None for c in classes],
                name=name,
                marker_color=color,
                hovertemplate=f"{name}<br>%{{x}}: %{{y:.1%}}<extra></extra>",
            )
            for per_class, name, color in zip((per_class_a, per_class_b), names, RUN_COLORS)
        ]
    )
    fig.update_yaxes(title_text="F1", range=[0, 1], tickformat=".0%")
    return _layout(fig, 340, barmode="group", legend=dict(orientation="h", y=1.12))


def compare_curves(
    history_a: Sequence[Mapping[str, object]],
    history_b: Sequence[Mapping[str, object]],
    names: tuple[str, str],
) -> go.Figure:
    """Validation loss and accuracy per epoch of two runs overlaid (training curves dotted)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.08)
    for history, name, color in zip((history_a, history_b), names, RUN_COLORS):
        epochs = _column(history, "epoch")
        for col, metric in ((1, "loss"), (2, "accuracy")):
            for key, dash, suffix in ((f"val_{metric}", "solid", "validation"), (metric, "dot", "train")):
                fig.add_trace(
                    go.Scatter(
                        x=epochs,
                        y=_column(history, key),
                        mode="lines",
                        name=f"{name} · {suffix}",
                        line=dict(color=color, dash=dash),
                        legendgroup=f"{name}{suffix}",
                        showlegend=col == 1,
                    ),
                    row=1,
                    col=col,
                )
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(tickformat=".0%", range=[0, 1.02], row=1, col=2)
    return _layout(fig, 360, legend=dict(orientation="h", y=-0.25))


def risk_coverage_chart(
    points: Sequence[Mapping[str, float]], operating: Mapping[str, float] | None
) -> go.Figure:
    """Accuracy of the accepted answers against the share accepted (:mod:`clothclf.evaluation.risk`),
    with the run's operating point marked."""
    fig = go.Figure(
        go.Scatter(
            x=[p["coverage"] for p in points],
            y=[p["accuracy"] for p in points],
            mode="lines",
            name="accept above a confidence",
            line=dict(color=TRAIN),
            customdata=[p["threshold"] for p in points],
            hovertemplate="accepted %{x:.0%}<br>correct %{y:.1%}<br>confidence ≥ %{customdata:.2f}<extra></extra>",
        )
    )
    if operating is not None and operating.get("accuracy") is not None:
        fig.add_trace(
            go.Scatter(
                x=[operating["coverage"]],
                y=[operating["accuracy"]],
                mode="markers",
                name="this run's threshold",
                marker=dict(color=ACCENT, size=12, symbol="diamond"),
                hovertemplate="accepted %{x:.0%}<br>correct %{y:.1%}<extra></extra>",
            )
        )
    low = min([p["accuracy"] for p in points] + [1.0])
    fig.update_xaxes(title_text="share of photos accepted (coverage)", range=[0, 1], tickformat=".0%")
    fig.update_yaxes(
        title_text="accuracy of accepted answers", range=[max(0.0, low - 0.02), 1.005], tickformat=".0%"
    )
    return _layout(fig, 380, legend=dict(orientation="h", y=-0.25))
