"""Mistakes: the photos a model got wrong, most confident first, and the classes it confuses most."""

from __future__ import annotations

import numpy as np
import streamlit as st

from clothclf.app.models_list import dataset_root_for, recorded_dataset_root
from clothclf.app.tables import display_name, select_predictions
from clothclf.evaluation.metrics import most_confused
from pages._shared import (
    PHOTOS_GONE,
    evaluated_run_picker,
    offer_dataset_download,
    paginate,
    photo_grid,
    require_app_navigation,
)

PER_PAGE = 12
ANY = "Any"


require_app_navigation()
st.title("Mistakes")
st.caption(
    "The photos a model got wrong, most confident first: where a model fails says more than its accuracy."
)

run, split, metrics, rows = evaluated_run_picker(
    "mistakes",
    no_run="This model folder has no saved predictions to review.",
    no_split="This run has no saved predictions.",
)
class_names = metrics["class_names"]
choices = [ANY, *class_names]

true_col, predicted_col, confidence_col = st.columns(3)
true = true_col.selectbox("True class", choices, key="mistakes_true", format_func=display_name)
predicted = predicted_col.selectbox(
    "Predicted class", choices, key="mistakes_predicted", format_func=display_name
)
min_confidence = confidence_col.slider("Minimum confidence", 0.0, 1.0, 0.0, 0.05, key="mistakes_confidence")

mistakes = select_predictions(
    rows,
    true=None if true == ANY else true,
    predicted=None if predicted == ANY else predicted,
    min_confidence=min_confidence,
    mistakes_only=True,
)
wrong = sum(row["true"] != row["predicted"] for row in rows)

cards, pairs = st.columns([3, 1], gap="large")
with pairs:
    st.subheader("Most confused", anchor=False)
    confused = most_confused(np.asarray(metrics["confusion_matrix"]), class_names)
    st.dataframe(
        [{"true → predicted": f"{t} → {p}", "images": n} for t, p, n in confused[:10]],
        hide_index=True,
    )
with cards:
    st.subheader(f"{len(mistakes)} of {wrong} mistakes", anchor=False)
    root = dataset_root_for(run)
    if root is None and recorded_dataset_root(run):
        st.info(PHOTOS_GONE, icon=":material/info:")
    elif root is None:
        offer_dataset_download(
            "The dataset is not on this server, so the photos cannot be shown.", "mistakes_download"
        )
    explain = st.toggle("Show where the model looked", key="mistakes_heatmap", disabled=root is None)
    if not mistakes:
        st.caption("No mistakes match these filters.")
    else:
        page = paginate(mistakes, PER_PAGE, key="mistakes_page")
        photo_grid(page, root, columns=4, top3=True, explain_with=str(run.path) if explain else None)
