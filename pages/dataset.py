"""Dataset: class balance, a map of the photos, and the dataset's own mistakes to decide on.

Label issues, duplicates and outliers come from :mod:`clothclf.evaluation.data_issues`; decisions
(keep, relabel, exclude) are written to the dataset's overlay (:mod:`clothclf.data.overlay`), never
to the photos. Layout only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from clothclf.app.issues_process import issues_in_child
from clothclf.app.jobs import active_data_dir
from clothclf.app.tables import display_name
from clothclf.app.training_data import extract_uploaded_dataset
from clothclf.config import Paths
from clothclf.data.datasets import SPLITS, class_counts, create_dataset, dataset_fingerprint
from clothclf.data.overlay import (
    EXCLUDE,
    KEEP,
    RELABEL,
    Decision,
    file_digest,
    load_or_new,
    overlay_path,
    write_overlay,
)
from clothclf.errors import ClothclfError
from pages._shared import (
    CHART_CONFIG,
    offer_dataset_download,
    paginate,
    photo_thumbnail,
    require_app_navigation,
    session_model_dir,
    show_error,
)

ISSUES_KEY = "dataset_issues"
PER_PAGE = 8
THUMBNAIL = 112


@st.cache_data(show_spinner="Reading the dataset…", max_entries=4)
def read_dataset(folder: str, stamp: float):
    """The dataset in ``folder`` and its fingerprint (every photo read once)."""
    dataset = create_dataset(folder)
    return dataset, dataset_fingerprint(dataset)


def chosen_folder(paths: Paths) -> Path | None:
    """The uploaded zip's folder, else the default dataset's (None, with the download offered, if absent)."""
    upload = st.file_uploader(
        "Another dataset (optional): a zip with one folder of photos per class, or split folders of class folders",
        type=["zip"],
        key="ds_upload",
    )
    if upload is not None:
        return extract_uploaded_dataset(upload, paths, in_use=active_data_dir(paths))
    if not paths.default_dataset_dir.is_dir():
        offer_dataset_download(
            "The Dataset page needs a dataset: upload a zip, or use the default one.", "ds_download"
        )
        return None
    return paths.default_dataset_dir


def class_balance(dataset) -> None:
    """Photos per class in each split, as grouped bars."""
    figure = go.Figure()
    for split in SPLITS:
        counts = class_counts(dataset.split(split), len(dataset.class_names))
        if sum(counts):
            figure.add_bar(name=f"{split} ({sum(counts)})", x=list(dataset.class_names), y=counts)
    figure.update_layout(barmode="group", height=300, margin=dict(l=10, r=10, t=10, b=10))
    st.plotly_chart(figure, config=CHART_CONFIG, key="ds_balance")


def find(dataset, fingerprint: str, model_dir: str, paths: Paths) -> dict:
    """The issues of ``dataset`` with a progress bar, kept in the session (per dataset and model). They
    are found in a child process: the server never holds TensorFlow."""
    store = st.session_state.setdefault(ISSUES_KEY, {})
    key = (fingerprint, model_dir)
    if key not in store:
        bar = st.progress(0.0, text="Starting (loading TensorFlow in a separate process)…")
        issues, photo_map = issues_in_child(
            dataset.root,
            fingerprint,
            model_dir,
            paths,
            progress=lambda done, what: bar.progress(done, text=what.capitalize()),
        )
        bar.empty()
        store.clear()  # one result at a time: the server's memory stays small
        store[key] = dict(issues=issues, files=photo_map.files, labels=photo_map.labels, xy=photo_map.xy)
    return store[key]


def embedding(found: dict, dataset) -> None:
    """A 2-D map of every photo, coloured by label, issues ringed; a clicked photo is shown below."""
    issues, files, labels, xy = found["issues"], found["files"], found["labels"], found["xy"]
    flagged = {i.file for i in issues.label_issues}
    figure = go.Figure()
    for index, name in enumerate(dataset.class_names):
        rows = np.nonzero(labels == index)[0]
        symbols = ["x" if files[i] in flagged else "circle" for i in rows]
        figure.add_scattergl(
            x=xy[rows, 0],
            y=xy[rows, 1],
            mode="markers",
            name=display_name(name),
            customdata=rows,
            marker=dict(size=6, symbol=symbols, opacity=0.75),
            hovertext=[files[i] for i in rows],
        )
    figure.update_layout(
        height=480, margin=dict(l=10, r=10, t=10, b=10), xaxis_visible=False, yaxis_visible=False
    )
    event = st.plotly_chart(
        figure, config=CHART_CONFIG, key="ds_map", on_select="rerun", selection_mode="points"
    )
    points = event.selection.points if event and event.selection else []
    if points:
        row = int(points[0]["customdata"])
        left, right = st.columns([1, 3])
        left.image(photo_thumbnail(dataset.root / files[row], 240))
        suggested = issues.suggested.get(files[row], "")
        right.markdown(
            f"`{files[row]}`  \nlabel **{display_name(dataset.class_names[labels[row]])}**, "
            f"out-of-fold answer **{display_name(suggested)}**"
        )
    st.caption(
        "Principal components of the frozen backbone features; × marks a label issue. Click a point to see its photo."
    )


def decide(dataset, fingerprint: str, paths: Paths, file: str, action: str, label: str | None = None) -> None:
    """Button callback: record a decision on ``file`` in the dataset's overlay."""
    path = overlay_path(paths, fingerprint)
    decision = Decision(file, action, label, file_digest(dataset.root / file))
    write_overlay(path, load_or_new(path, fingerprint).decide(decision))


def issue_row(dataset, fingerprint: str, paths: Paths, issue, decided) -> None:
    """One label issue: thumbnail, labels, score and the three decisions."""
    photo, text, actions = st.columns([1, 2, 3])
    photo.image(photo_thumbnail(dataset.root / issue.file, THUMBNAIL))
    text.markdown(
        f"`{issue.file}`  \ngiven **{display_name(issue.given)}**, suggested "
        f"**{display_name(issue.suggested)}**  \nlabel quality {issue.score:.3f}"
    )
    if decided is not None:
        text.caption(
            f"Decided: {decided.action}" + (f" to {display_name(decided.label)}" if decided.label else "")
        )
    args = (dataset, fingerprint, paths, issue.file)
    keep, exclude = actions.columns(2)
    keep.button("Keep", key=f"keep-{issue.file}", on_click=decide, args=(*args, KEEP), width="stretch")
    exclude.button(
        "Exclude", key=f"exclude-{issue.file}", on_click=decide, args=(*args, EXCLUDE), width="stretch"
    )
    names = list(dataset.class_names)
    target = actions.selectbox(
        "Relabel to",
        names,
        names.index(issue.suggested),
        key=f"to-{issue.file}",
        format_func=display_name,
        label_visibility="collapsed",
    )
    actions.button(
        f"Relabel to {display_name(target)}",
        key=f"relabel-{issue.file}",
        on_click=decide,
        args=(*args, RELABEL, target),
        width="stretch",
    )


def label_issues(found: dict, dataset, fingerprint: str, paths: Paths) -> None:
    """The ranked label issues, a page at a time, with their decisions."""
    issues = found["issues"].label_issues
    if not issues:
        st.success("No label issue found.")
        return
    decided = load_or_new(overlay_path(paths, fingerprint), fingerprint).by_file()
    for issue in paginate(issues, PER_PAGE, "ds_issues"):
        issue_row(dataset, fingerprint, paths, issue, decided.get(issue.file))
        st.divider()


def duplicates(found: dict, dataset) -> None:
    """Duplicate groups side by side, leaks between training and validation/test first."""
    groups = found["issues"].duplicates
    if not groups:
        st.success("No duplicates found.")
        return
    for group in paginate(groups, PER_PAGE, "ds_duplicates"):
        st.markdown(
            f"**{'Leak across splits' if group.leak else 'Same split'}** · similarity {group.similarity:.3f}"
        )
        for column, file, split in zip(st.columns(max(len(group.files), 4)), group.files, group.splits):
            column.image(
                photo_thumbnail(dataset.root / file, THUMBNAIL), caption=f"{split}: {Path(file).name}"
            )


def outliers(found: dict, dataset) -> None:
    """The photos farthest from any other, in a grid."""
    rows = found["issues"].outliers
    for start in range(0, min(len(rows), 24), 6):
        for column, outlier in zip(st.columns(6), rows[start : start + 6]):
            column.image(
                photo_thumbnail(dataset.root / outlier.file, THUMBNAIL),
                caption=f"{outlier.split} · {outlier.score:.3f}",
            )


def overlay_note(fingerprint: str, paths: Paths) -> None:
    """Where the decisions are and how to train with them."""
    path = overlay_path(paths, fingerprint)
    overlay = load_or_new(path, fingerprint)
    if overlay.decisions:
        changes = len(overlay.changes())
        st.info(
            f"{len(overlay.decisions)} decisions ({changes} relabel or exclude) are saved in `{path}`: the "
            f"Fine-tune page applies them when it trains on this dataset, as `clothclf train --overlay {path}` "
            "does. The photos themselves are unchanged.",
            icon=":material/edit_note:",
        )
        st.download_button(
            "Download the overlay", path.read_bytes(), file_name="overlay.json", key="ds_overlay"
        )


def main() -> None:
    """The page."""
    require_app_navigation()
    st.title("Dataset")
    st.caption(
        "Find the dataset's own mistakes: labels that look wrong, the same photo twice "
        "(worst across training and test), photos unlike any class. Decisions never touch the photos."
    )
    paths = Paths.from_env()
    try:
        folder = chosen_folder(paths)
        if folder is None:
            return
        dataset, fingerprint = read_dataset(str(folder), folder.stat().st_mtime)
    except ClothclfError as exc:
        show_error(exc)
        return
    st.subheader("Class balance")
    class_balance(dataset)
    model_dir = session_model_dir()
    if not st.button("Find issues", type="primary", icon=":material/search:", key="ds_find") and (
        (fingerprint, model_dir) not in st.session_state.get(ISSUES_KEY, {})
    ):
        st.caption(
            "Scores every photo with a head fitted on the other photos' frozen backbone features (the model "
            "in use's backbone): about a minute once the features are cached, longer the first time."
        )
        return
    try:
        found = find(dataset, fingerprint, model_dir, paths)
    except ClothclfError as exc:
        show_error(exc)
        return
    issues = found["issues"]
    counts = st.columns(4)
    counts[0].metric("Label issues", len(issues.label_issues))
    counts[1].metric("Duplicate groups", len(issues.duplicates))
    counts[2].metric("Leaks across splits", len(issues.leaks))
    counts[3].metric("Outliers", len(issues.outliers))
    st.subheader("Map of the photos")
    embedding(found, dataset)
    overlay_note(fingerprint, paths)
    labels_tab, duplicates_tab, outliers_tab = st.tabs(["Label issues", "Duplicates", "Outliers"])
    with labels_tab:
        label_issues(found, dataset, fingerprint, paths)
    with duplicates_tab:
        duplicates(found, dataset)
    with outliers_tab:
        outliers(found, dataset)


main()
