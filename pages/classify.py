"""Classify: upload photos (or take one, or try an example) and see what the model thinks they are."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from clothclf.app.download import dataset_downloadable
from clothclf.app.models_list import dataset_root_for, describe_model, example_photos
from clothclf.app.tables import display_name, grouped_errors, results_csv, results_table, status_counts
from clothclf.app.uploads import (
    READ_FORMATS,
    Upload,
    UploadResult,
    batch_limits_text,
    classify_uploads,
    explanation_overlay,
    preview,
    square_thumbnail,
)
from clothclf.config import Limits
from clothclf.console import counted
from clothclf.evaluation import plots
from clothclf.serving.classifier import Classifier
from pages._shared import (
    CHART_CONFIG,
    cached_classifier,
    offer_dataset_download,
    photo_thumbnail,
    require_app_navigation,
    session_model_dir,
    show_error,
)

LIMITS = Limits()
TOP_K = 3
#: The longest side of the photo shown beside its answer (a portrait photo stays short enough on a
#: phone, where the answer comes below it).
PREVIEW_SIDE = 400
#: Files named in a message about several of them; the rest are counted.
NAMED_FILES = 5
EXAMPLE_KEY = "classify_example"


# Uploads are cached by their id (the server holds their bytes once; nothing is copied or hashed), for
# their session only: no other session has the same ids, and a session's entries go when it disconnects.
@st.cache_data(show_spinner="Classifying…", max_entries=16, scope="session")
def classify(model_dir: str, keys: tuple[str, ...], _uploads: list[tuple[str, Upload]]) -> list[UploadResult]:
    return classify_uploads(cached_classifier(model_dir), _uploads, LIMITS, TOP_K)


@st.cache_data(show_spinner=False, max_entries=8, scope="session")
def photo(key: str, _data: Upload):
    return preview(_data, PREVIEW_SIDE, LIMITS.max_pixels)


@st.cache_data(show_spinner=False, max_entries=64, scope="session")
def thumbnail(key: str, _data: Upload):
    return square_thumbnail(_data, 240, LIMITS.max_pixels)


@st.cache_data(show_spinner="Finding where the model looked…", max_entries=8, scope="session")
def explained_photo(model_dir: str, key: str, _data: Upload):
    return explanation_overlay(cached_classifier(model_dir), _data, PREVIEW_SIDE, LIMITS.max_pixels)


STATUS_LABELS = {"Accepted": "accept", "Please check": "review", "Not one of the classes": "unknown"}
STATUS_TEXT = {"accept": "", "review": " · please check", "unknown": " · not one of the classes"}


def upload_key(data: Upload) -> str:
    """What identifies an upload for the caches: the uploader's file id, or the example's path."""
    return getattr(data, "file_id", None) or str(data)


def show_answer(prediction, n_classes: int) -> None:
    if prediction.status == "unknown":
        st.header("Unknown", anchor=False)
        st.markdown(f"Not one of the {n_classes} classes.")
        st.caption(
            f"This photo does not look like the photos the model was trained on "
            f"(closest class: {display_name(prediction.label)}, {prediction.confidence:.0%})."
        )
        return
    st.caption("This looks like")
    st.header(display_name(prediction.label), anchor=False)
    st.metric("Confidence", f"{prediction.confidence:.0%}")
    if prediction.status == "review":
        st.warning(
            "Please check — the model is not sure enough to accept this answer.", icon=":material/help:"
        )


def show_one(result: UploadResult, data: Upload, model_dir: str, n_classes: int) -> None:
    if not result.ok:
        st.error(f"**{result.name}**: {result.error}", icon=":material/error:")
        return
    photo_col, answer = st.columns([2, 3], gap="large")
    with photo_col:
        image = photo(upload_key(data), data)
        if st.toggle("Show where the model looked", key="heatmap"):
            try:
                image = explained_photo(model_dir, upload_key(data), data)
            except ValueError as exc:
                show_error(exc)
        st.image(image, caption=result.name)  # at most PREVIEW_SIDE tall: on a phone the answer follows
    with answer:
        prediction = result.prediction
        show_answer(prediction, n_classes)
        st.plotly_chart(
            plots.probability_bars(prediction.probabilities, TOP_K), config=CHART_CONFIG, key="probabilities"
        )


def show_failed(error: str, names: list[str]) -> None:
    """One message for the files that failed the same way (five files over the batch limit: one box)."""
    if len(names) == 1:
        st.error(f"**{names[0]}**: {error}", icon=":material/error:")
        return
    more = f" and {len(names) - NAMED_FILES} more" if len(names) > NAMED_FILES else ""
    st.error(
        f"**{counted(len(names), 'photo')}** ({', '.join(names[:NAMED_FILES])}{more}): {error}",
        icon=":material/error:",
    )


def show_many(results: list[UploadResult], uploads: list[tuple[str, Upload]]) -> None:
    for error, names in grouped_errors(results):
        show_failed(error, names)
    ok = [(r, data) for r, (_, data) in zip(results, uploads) if r.ok]
    counts = status_counts(results)
    st.subheader(f"{counted(len(ok), 'photo')} classified", anchor=False)
    st.markdown(
        f"**{counts['accept']}** accepted · **{counts['review']}** to check · **{counts['unknown']}** "
        "not one of the classes"
    )
    shown = st.multiselect("Show", list(STATUS_LABELS), default=list(STATUS_LABELS), key="status_filter")
    wanted = {STATUS_LABELS[name] for name in shown or ()}
    ok = [(r, data) for r, data in ok if r.prediction.status in wanted]
    per_row = 5
    for start in range(0, len(ok), per_row):
        for column, (result, data) in zip(st.columns(per_row), ok[start : start + per_row]):
            prediction = result.prediction
            column.image(thumbnail(upload_key(data), data), width="stretch")
            if prediction.status == "unknown":
                column.markdown(f"**Unknown** · closest: {display_name(prediction.label)}")
            else:
                label = f"**{display_name(prediction.label)}** · {prediction.confidence:.0%}"
                column.markdown(label + STATUS_TEXT[prediction.status])
            column.caption(result.name)
    st.subheader("All results", anchor=False)
    st.dataframe(
        results_table(results),
        hide_index=True,
        column_config={
            "confidence": st.column_config.ProgressColumn(
                "confidence", format="percent", min_value=0, max_value=1
            ),
            "top_k": st.column_config.TextColumn(f"top {TOP_K}"),
        },
    )
    st.download_button(
        "Download results (CSV)",
        results_csv(results),
        file_name="clothclf-predictions.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
    )


def uploaded_photos(classifier: Classifier) -> list[tuple[str, Upload]]:
    """The uploader and the camera, side by side; the photos they hold."""
    upload_col, options_col = st.columns([3, 2], gap="large")
    with upload_col:
        files = st.file_uploader(
            "Photos",
            accept_multiple_files=True,  # any file: one of another format is named with the formats read
            max_upload_size=LIMITS.max_upload_mb,
            help=f"{READ_FORMATS}. {batch_limits_text(LIMITS)}",
        )
    with options_col:
        if classifier.trust_note:
            st.caption(classifier.trust_note)
        use_camera = st.toggle("Take a photo with the camera")
        shot = st.camera_input("Camera", label_visibility="collapsed") if use_camera else None
    uploads: list[tuple[str, Upload]] = [(f.name, f) for f in files or []]
    if shot is not None:
        uploads.append(("camera photo", shot))
    return uploads


def example_photo(model_dir: str) -> list[tuple[str, Upload]]:
    """Example photos from the test set to try (or the dataset's download); the one picked, if any."""
    entry = describe_model(model_dir)
    run = entry.run if entry else None
    examples = example_photos(dataset_root_for(run), limit=5)
    if not examples and dataset_downloadable(run):
        offer_dataset_download(
            "No photo at hand? Example photos come from the dataset, which is not on this server.",
            "classify_download",
        )
    if examples:
        st.markdown("**No photo at hand? Try an example from the test set:**")
        for i, (column, path) in enumerate(zip(st.columns(len(examples) + 1), examples)):
            column.image(photo_thumbnail(path), width="stretch")
            if column.button("Try this", key=f"example-{i}", width="stretch"):
                st.session_state[EXAMPLE_KEY] = str(path)
    chosen = st.session_state.get(EXAMPLE_KEY)
    return [(Path(chosen).name, Path(chosen))] if chosen and Path(chosen).is_file() else []


def main() -> None:
    """The page. The uploads stay local to this run: Streamlit keeps the module of the last script
    run (of any visitor) until the next one, so files named at the top level of a page stayed in
    the server's memory after their visitor left (docs/memory.md, Soak)."""
    require_app_navigation()
    st.title("Classify clothing photos")
    model_dir = session_model_dir()
    try:
        classifier = cached_classifier(model_dir)
    except ValueError as exc:
        show_error(exc)
        st.page_link("pages/models.py", label="Pick another model", icon=":material/swap_horiz:")
        st.stop()
    classes = ", ".join(display_name(c) for c in classifier.class_names)
    st.caption(f"Upload photos of clothes and the model names what each one shows: {classes}.")
    uploads = uploaded_photos(classifier) or example_photo(model_dir)
    if not uploads:
        return
    st.divider()
    results = classify(model_dir, tuple(upload_key(data) for _, data in uploads), uploads)
    if len(uploads) == 1:
        show_one(results[0], uploads[0][1], model_dir, len(classifier.class_names))
    else:
        show_many(results, uploads)


main()
