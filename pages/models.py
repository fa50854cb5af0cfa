"""Models: every model the app can use, which one this session uses, and two runs compared."""

from __future__ import annotations

import streamlit as st

from clothclf.app.models_list import ModelEntry, find_model, models_table, same_classes
from clothclf.evaluation import plots
from clothclf.runs import HISTORY, TRAINING_SPLIT
from pages._shared import (
    CHART_CONFIG,
    model_scan,
    read_artifact,
    read_evaluation,
    require_app_navigation,
    session_model_dir,
    use_model,
)

#: The table's columns and widths (px), which fit a 1400 px window's page without sideways scrolling;
#: long names and class lists wrap (rows fit three lines). Macro-F1 and epochs are on the Model report.
TABLE_COLUMNS = {
    "model": st.column_config.TextColumn(width=130),
    "dataset": st.column_config.TextColumn(width=110),
    "classes": st.column_config.TextColumn(width=170),
    "backbone": st.column_config.TextColumn(width=130),
    "image size": st.column_config.NumberColumn("px", width=45, help="Image size in pixels"),
    "val accuracy": st.column_config.NumberColumn("val acc", format="%.1f%%", width=70),
    "test accuracy": st.column_config.NumberColumn("test acc", format="%.1f%%", width=70),
    "training time": st.column_config.TextColumn("training", width=80),
    "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm", width=115),
}
#: Rows taller than 4 rem let the table wrap its text.
ROW_HEIGHT = 70


def validation_f1(entry: ModelEntry) -> dict:
    metrics, _ = read_evaluation(entry.path, TRAINING_SPLIT)
    return metrics["per_class"] if metrics else {}


require_app_navigation()
st.title("Models")
st.caption("The shipped default model and every complete training run. Pick the one this session uses.")

scan = model_scan()
entries = list(scan.entries)
for left_out in scan.left_out:  # each said here, not only in the server's log
    st.warning(f"**{left_out.path.name}** is not offered: {left_out.reason}", icon=":material/gpp_bad:")
if not entries:
    st.info(
        "There is no trained model yet. Train one with `clothclf train` or on the Fine-tune page.",
        icon=":material/info:",
    )
    st.stop()

st.dataframe(
    models_table(entries),
    hide_index=True,
    placeholder="–",
    row_height=ROW_HEIGHT,
    column_order=list(TABLE_COLUMNS),
    column_config=TABLE_COLUMNS,
)

st.subheader("Model for this session", anchor=False)
by_path = {str(e.path): e for e in entries}
current = find_model(entries, session_model_dir())
pick_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
choice = pick_col.selectbox(
    "Classify with",
    list(by_path),
    index=list(by_path).index(str(current.path)) if current else 0,
    format_func=lambda path: by_path[path].label,
    key="models_choice",
)
in_use = current is not None and str(current.path) == choice
button_col.button(
    "In use" if in_use else "Use this model",
    type="primary",
    disabled=in_use,
    on_click=use_model,
    args=(choice,),
    width="stretch",
)
if in_use:
    st.caption(f"The Classify page uses **{by_path[choice].label}**.")

st.subheader("Compare two models", anchor=False)
if len(entries) < 2:
    st.caption("Train another model to compare it with this one.")
    st.stop()
a_col, b_col = st.columns(2)
a = a_col.selectbox("First", list(by_path), 0, format_func=lambda p: by_path[p].label, key="compare_a")
b = b_col.selectbox("Second", list(by_path), 1, format_func=lambda p: by_path[p].label, key="compare_b")
first, second = by_path[a], by_path[b]
names = (first.name, second.name) if first.name != second.name else ("first", "second")
st.plotly_chart(
    plots.compare_curves(
        read_artifact(first.path, HISTORY) or [], read_artifact(second.path, HISTORY) or [], names
    ),
    config=CHART_CONFIG,
)
if same_classes(first, second):
    st.plotly_chart(plots.compare_f1(validation_f1(first), validation_f1(second), names), config=CHART_CONFIG)
    st.caption("Per-class F1 on each model's validation set.")
else:
    st.info(
        f"These models sort photos into different classes ({first.num_classes} and {second.num_classes}), "
        "so their per-class scores are not compared.",
        icon=":material/info:",
    )
