"""Mistakes: the photos a model got wrong, most confident first, and the classes it confuses most."""

from __future__ import annotations

import numpy as np
import streamlit as st

from clothclf.app.models_list import dataset_root_for, recorded_dataset_root
from clothclf.app.tables import display_name, select_predictions
from clothclf.config import MB
from clothclf.evaluation.metrics import most_confused
from pages._shared import (
    PHOTOS_GONE,
    evaluated_run_picker,
    paginate,
    photo_grid,
    require_app_navigation,
    show_error,
)

PER_PAGE = 12
ANY = "Any"


def offer_download() -> None:
    """Say the photos are missing and download the dataset on request, with a progress bar."""
    st.info(
        "The dataset is not on this computer, so the photos cannot be shown. "
        "Download it (about 100 MB) to see them.",
        icon=":material/cloud_download:",
    )
    if not st.button("Download the dataset", icon=":material/download:"):
        return
    from clothclf.data.download import download_dataset

    bar = st.progress(0.0, text="Connecting…")
    shown = {"percent": -1}

    def progress(done: int, total: int | None) -> None:
        percent = int(100 * done / total) if total else 0
        if percent != shown["percent"] or not total:
            shown["percent"] = percent
            size = f" of {total / MB:.0f} MB" if total else ""
            bar.progress(percent / 100, text=f"Downloading… {done / MB:.0f} MB{size}")

    try:
        with st.spinner("Downloading and checking the dataset…"):
            download_dataset(progress=progress)
    except ValueError as exc:
        bar.empty()
        show_error(exc)
    else:
        st.rerun()


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
        offer_download()
    explain = st.toggle("Show where the model looked", key="mistakes_heatmap", disabled=root is None)
    if not mistakes:
        st.caption("No mistakes match these filters.")
    else:
        page = paginate(mistakes, PER_PAGE, key="mistakes_page")
        photo_grid(page, root, columns=4, top3=True, explain_with=str(run.path) if explain else None)
