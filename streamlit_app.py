"""The clothclf web app: ``streamlit run streamlit_app.py``.

This entry point sets up the page, the navigation and the sidebar; each page is a file in ``pages/``.
It must stay light: nothing here (or on the Classify page) imports TensorFlow.
"""

from __future__ import annotations

import streamlit as st

from clothclf.app.models_list import describe_model, find_model
from pages._shared import keep_server_memory_flat, model_scan, session_model_dir

keep_server_memory_flat()  # first: the allocator's settings apply to what comes after
st.set_page_config(page_title="clothclf · clothing photo classifier", page_icon="👕", layout="wide")

navigation = st.navigation(
    [
        st.Page("pages/classify.py", title="Classify", icon=":material/photo_camera:", default=True),
        st.Page("pages/report.py", title="Model report", icon=":material/monitoring:"),
        st.Page("pages/mistakes.py", title="Mistakes", icon=":material/error:"),
        st.Page("pages/models.py", title="Models", icon=":material/view_list:"),
        st.Page("pages/fine_tune.py", title="Fine-tune", icon=":material/tune:"),
        st.Page("pages/dataset.py", title="Dataset", icon=":material/dataset:"),
    ]
)

with st.sidebar:
    model_dir = session_model_dir()
    model = find_model(model_scan().entries, model_dir) or describe_model(model_dir)
    st.caption("Model in use")
    if model is None:
        st.warning("No model found. Train one, or pick one on the Models page.", icon=":material/warning:")
    else:
        st.markdown(f"**{model.label}**")
        facts = [
            model.summary.get("backbone"),
            f"{model.summary['image_size']} px" if "image_size" in model.summary else None,
        ]
        if "val_accuracy" in model.summary:
            facts.append(f"{model.summary['val_accuracy']:.1%} validation accuracy")
        st.caption(" · ".join(f for f in facts if f))
    st.page_link("pages/models.py", label="Change model", icon=":material/swap_horiz:")

navigation.run()
