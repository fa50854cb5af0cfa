"""Model report: how a model trained, how well it does per class, what it confuses, how calibrated it is."""

from __future__ import annotations

import numpy as np
import streamlit as st

from clothclf.app.models_list import dataset_root_for, recorded_dataset_root
from clothclf.app.tables import display_name, per_class_rows, select_predictions
from clothclf.evaluation import plots
from clothclf.evaluation.metrics import cell_count, default_cell, reliability_table
from clothclf.evaluation.predictions import prediction_arrays
from clothclf.evaluation.risk import operating_point, risk_coverage, unknown_effect
from clothclf.runs import HISTORY
from pages._shared import (
    CHART_CONFIG,
    PHOTOS_GONE,
    evaluated_run_picker,
    paginate,
    photo_grid,
    read_artifact,
    require_app_navigation,
)

CELL_TRUE, CELL_PREDICTED = "report_cell_true", "report_cell_predicted"
#: The model and split the chosen cell was picked on.
CELL_SCOPE = "report_cell_scope"


def select_cell(chart_key: str) -> None:
    """Chart click callback: put the clicked cell (x = predicted, y = true) into the two select boxes."""
    points = st.session_state[chart_key].selection.points
    if points:
        st.session_state[CELL_TRUE] = points[0]["y"]
        st.session_state[CELL_PREDICTED] = points[0]["x"]


def metric_cards(metrics: dict) -> None:
    headline = (
        ("Accuracy", f"{metrics['accuracy']:.1%}", "Share of images whose top class is right."),
        ("Macro-F1", f"{metrics['macro_f1']:.3f}", "F1 averaged over classes, each class counting equally."),
        (
            "Top-3 accuracy",
            f"{metrics['top3_accuracy']:.1%}",
            "Share of images whose class is among the top 3.",
        ),
        ("Log loss", f"{metrics['log_loss']:.3f}", "Cross-entropy of the probabilities; lower is better."),
        ("ECE", f"{metrics['ece']:.3f}", "Expected calibration error: gap between confidence and accuracy."),
    )
    for column, (label, value, help_text) in zip(st.columns(len(headline)), headline):
        column.metric(label, value, help=help_text, border=True)
    scores = (("MAE", "mae"), ("MSE", "mse"), ("RMSE", "rmse"), ("R²", "r2"))
    columns = st.columns(len(headline))
    for column, (label, key) in zip(columns, scores):
        column.metric(label, f"{metrics[key]:.3f}")
    columns[-1].caption("Probabilities scored against one-hot labels, as regression errors.")


require_app_navigation()
st.title("Model report")
st.caption("How a model trained and how well it does on photos it never saw during training.")

run, split, metrics, rows = evaluated_run_picker(
    "report",
    no_run="This model folder has no saved training run or evaluation to report on.",
    no_split="This run has no saved evaluation.",
)
class_names = metrics["class_names"]

st.caption(f"{metrics['n_images']} images of {len(class_names)} classes in the {split} set.")
metric_cards(metrics)

training, per_class, confusion, calibration, trust = st.tabs(
    ["Training", "Per class", "Confusion matrix", "Calibration", "When to trust"]
)

with training:
    history = read_artifact(run.path, HISTORY) or []
    if history:
        st.plotly_chart(plots.training_curves(history), config=CHART_CONFIG)
        st.plotly_chart(plots.learning_rate_curve(history), config=CHART_CONFIG)
        if len({row.get("phase") for row in history}) > 1:  # a head-only run draws no such line
            st.caption("The dashed line marks where the backbone was unfrozen for fine-tuning.")
    else:
        st.info("This run saved no training history.", icon=":material/info:")

with per_class:
    st.plotly_chart(plots.per_class_bars(metrics["per_class"]), config=CHART_CONFIG)
    st.dataframe(
        per_class_rows(metrics),
        hide_index=True,
        column_config={
            key: st.column_config.NumberColumn(key if key != "f1" else "F1", format="%.3f")
            for key in ("precision", "recall", "f1")
        },
    )

with confusion:
    normalize = st.toggle("Show shares of each true class", help="Each row divided by its number of images.")
    st.plotly_chart(
        plots.confusion_heatmap(metrics["confusion_matrix"], class_names, normalize),
        config=CHART_CONFIG,
        key="report_confusion",
        on_select=lambda: select_cell("report_confusion"),
        width="content",
        selection_mode="points",
    )
    st.caption("Rows are the true class, columns the predicted one. Click a cell to see its photos.")
    matrix = np.asarray(metrics["confusion_matrix"])
    scope = f"{run.path}|{split}"
    chosen = (st.session_state.get(CELL_TRUE), st.session_state.get(CELL_PREDICTED))
    if st.session_state.get(CELL_SCOPE) != scope and not cell_count(matrix, class_names, *chosen):
        # A cell picked on another split or model that is empty here (or unknown) starts over.
        st.session_state[CELL_TRUE], st.session_state[CELL_PREDICTED] = default_cell(matrix, class_names)
    st.session_state[CELL_SCOPE] = scope
    true_col, predicted_col = st.columns(2)
    true = true_col.selectbox("True class", class_names, key=CELL_TRUE, format_func=display_name)
    predicted = predicted_col.selectbox(
        "Predicted class", class_names, key=CELL_PREDICTED, format_func=display_name
    )
    cell = select_predictions(rows, true=true, predicted=predicted)
    root = dataset_root_for(run)
    if not cell:
        st.caption("No images in this cell.")
    elif root is None:
        gone = (
            PHOTOS_GONE
            if recorded_dataset_root(run)
            else "The dataset is not on this computer, so the photos cannot be shown."
        )
        st.info(gone, icon=":material/info:")
    else:
        photo_grid(paginate(cell, 12, key="report_cell_page"), root, columns=6, top3=False)

with calibration:
    y_true, probs = prediction_arrays(rows, class_names)
    st.plotly_chart(plots.reliability_diagram(reliability_table(y_true, probs)), config=CHART_CONFIG)
    st.caption(
        "Each bar is the accuracy of the images whose confidence falls in that range. Bars below the "
        f"diagonal mean the model is over-confident there. ECE = {metrics['ece']:.3f}."
    )
    temperature = run.summary.get("temperature")
    if temperature is not None and temperature != 1.0:
        st.caption(
            f"Confidences are temperature-scaled (T = {temperature:.2f}, fitted on the validation set), "
            "which changes how sure the model says it is, never its answer."
        )

with trust:
    record = run.summary.get("trust")
    point = operating_point(rows, record["review_confidence"]) if record else None
    st.plotly_chart(plots.risk_coverage_chart(risk_coverage(rows), point), config=CHART_CONFIG)
    st.caption(
        "Accept only answers above a confidence: the fewer you accept, the more of them are right. "
        "Each point of the line is one threshold."
    )
    if record and "status" not in rows[0]:
        st.info(
            "These saved predictions predate trust scores: evaluate the run again to see unknowns here.",
            icon=":material/info:",
        )
    if record:
        st.markdown(
            f"**This run's operating point**: answers below {record['review_confidence']:.0%} confidence go to "
            f"review, chosen on the validation set so that accepted answers are at least "
            f"{record['accept_accuracy']:.0%} right. Photos whose out-of-distribution score is above "
            f"{record['unknown_threshold']:.2f} (the top {record['unknown_rate']:.0%} of validation photos) "
            f"are called *not one of the classes*. {unknown_effect(point, split)}"
        )
    else:
        st.info(
            "This run was saved without trust scores: every photo gets a class and status comes from "
            "confidence alone. `clothclf trust --model <run folder>` adds them.",
            icon=":material/info:",
        )
