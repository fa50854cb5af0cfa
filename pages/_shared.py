"""Streamlit helpers shared by the pages: the session's model, cached loaders, pickers and photo cards.

Not a page itself (``streamlit_app.py`` lists the pages). Only UI code lives here; every computation
is a function in :mod:`clothclf`.
"""

from __future__ import annotations

import logging
import runpy
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.runtime import Runtime
from streamlit.runtime.app_session import AppSession
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec

from clothclf.allocator import release_freed_memory, tune_for_server
from clothclf.app.download import DATASET_SIZE_TEXT, download_progress
from clothclf.app.models_list import (
    ModelEntry,
    ModelScan,
    evaluated_splits,
    find_model,
    image_path,
    models_stamp,
    scan_models,
)
from clothclf.app.tables import display_name, page_count, page_of
from clothclf.app.uploads import explanation_overlay, square_thumbnail
from clothclf.config import Paths
from clothclf.evaluation import plots
from clothclf.evaluation.predictions import parse_top3
from clothclf.runs import CLASS_NAMES, RunInfo, evaluation_files, read_csv, read_json
from clothclf.serving.classifier import Classifier, load_classifier

#: ``st.session_state[MODEL_KEY]``: the folder (str) of the model this session classifies with.
MODEL_KEY = "model_dir"
CHART_CONFIG = {"displayModeBar": False}
#: Why a run on its own photos shows none: the folder it recorded is gone (uploads are deleted after the run).
PHOTOS_GONE = (
    "This model was trained on photos that are no longer on this computer (an uploaded dataset is "
    "deleted when its run ends), so its photos cannot be shown."
)
ENTRY_POINT = Path(__file__).resolve().parents[1] / "streamlit_app.py"
#: Seconds between two looks for ended sessions to release (:func:`release_ended_sessions`).
SESSION_SWEEP_S = 5.0

log = logging.getLogger(__name__)


def require_app_navigation() -> None:
    """Run this page through ``streamlit_app.py`` if Streamlit ran it from ``pages/`` on its own.

    Until some session has run the entry point's ``st.navigation``, Streamlit (1.67) treats a
    ``pages/`` folder as an automatic multipage app, for every session: a deep link as the first
    request of a fresh server runs the page file alone (no sidebar, no wide layout, its own page
    list). This turns that mode off, as ``st.navigation`` does, runs the entry point in its place
    (which runs this page, the one the URL names, through the app's navigation) and stops the
    page file's own run. Same script run, so no widget event is lost.
    """
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        runpy.run_path(str(ENTRY_POINT), run_name="__main__")
        st.stop()


def session_model_dir() -> str:
    """The session's model folder, the shipped default model until the user picks another."""
    if MODEL_KEY not in st.session_state:
        st.session_state[MODEL_KEY] = str(Paths.from_env().default_model_dir)
    return st.session_state[MODEL_KEY]


def use_model(path: str) -> None:
    """Button callback: make ``path`` this session's model (before the sidebar is drawn again)."""
    st.session_state[MODEL_KEY] = path


def release_ended_sessions(known: weakref.WeakValueDictionary[str, AppSession]) -> int:
    """Shut down the visitors' sessions that have ended (their reconnect time,
    ``server.disconnectedSessionTTL``, is over), empty their state, drop what they left behind
    (uploaded files, pictures), then give the freed memory back to the system. ``known``: the
    sessions seen by the previous call (updated). How many sessions it shut down.

    Streamlit (1.67) keeps a closed tab's session for a reconnect and then forgets it without shutting
    it down (also when another session's arrival expires it), so the files its visitor uploaded stayed
    in the server's memory for good (51 MB a visit in docs/memory.md's soak). Its state is emptied as
    well: the server's message loop keeps the last session it sent messages to until the next visitor
    comes, and with it that session's widget values (the uploaded files). Runs on the server's event
    loop, like Streamlit's own session changes; uses Streamlit internals, and only logs where a
    version lacks them."""
    try:
        runtime = Runtime.instance()
        sessions = runtime._session_mgr
        with sessions._storage_lock:
            sessions._session_storage._cache.expire()
        live = {info.session.id: info.session for info in sessions.list_sessions()}
        ended = [session for session_id, session in list(known.items()) if session_id not in live]
        for session in ended:
            session.shutdown()  # a no-op for a session Streamlit shut down itself
            session.session_state.clear()
            del known[session.id]
        known.update(live)
        left = _drop_files_of_sessions_not_in(runtime, set(live))
    except AttributeError as exc:  # another Streamlit version: its sessions are left to it
        log.warning("ended sessions are not released on this Streamlit version (%s)", exc)
        return 0
    if ended or left:
        release_freed_memory()
    return len(ended)


def _drop_files_of_sessions_not_in(runtime: Runtime, live: set[str]) -> bool:
    """Drop the uploaded files and pictures of sessions other than ``live``; whether there were any."""
    uploads, media = runtime.uploaded_file_mgr, runtime.media_file_mgr
    with uploads._lock:  # script threads and requests change both while this runs
        uploaded = set(uploads.file_storage) - live
    with media._lock:
        pictured = set(media._files_by_session_and_coord) - live
    for session_id in uploaded:
        uploads.remove_session_files(session_id)
    for session_id in pictured:
        media.clear_session_refs(session_id)
    media.remove_orphaned_files()
    return bool(uploaded or pictured)


def _share_bytes_when_uploads_are_copied() -> None:
    """Make a copy of an uploaded file share its bytes with the original.

    Streamlit (1.67) hands the script a deep copy of every widget's value, and a deep copy of an
    uploaded file (an ``io.BytesIO``) copied its bytes: every script run held the visitor's uploads
    twice (51 MB more a visit in docs/memory.md's soak). The copy made here shares the bytes, which
    ``io.BytesIO`` copies only if one of the two is written to, so the script still gets its own file."""

    def shared_copy(upload: UploadedFile, memo: dict) -> UploadedFile:
        record = UploadedFileRec(upload.file_id, upload.name, upload.type, upload.getvalue())
        return UploadedFile(record, upload._file_urls)

    UploadedFile.__deepcopy__ = shared_copy


@st.cache_resource(show_spinner=False)
def _sweep_sessions_every(seconds: float) -> bool:
    """Run :func:`release_ended_sessions` every ``seconds`` on the server's event loop, from now on
    (once per process: the cache keeps the answer). False where there is no server's loop (a test's
    script runner) or this Streamlit version has none to reach."""
    try:
        loop = Runtime.instance()._get_async_objs().eventloop
    except (RuntimeError, AttributeError):
        return False
    known: weakref.WeakValueDictionary[str, AppSession] = weakref.WeakValueDictionary()

    def sweep() -> None:
        try:
            release_ended_sessions(known)
        finally:
            loop.call_later(seconds, sweep)

    loop.call_soon_threadsafe(loop.call_later, seconds, sweep)
    return True


def keep_server_memory_flat() -> None:
    """At the start of every script run: glibc tuned for a long-lived server (see
    :mod:`clothclf.allocator`; effective from the first run on), uploads not copied, and ended
    sessions released every :data:`SESSION_SWEEP_S` seconds. Cheap after the first call."""
    tune_for_server()
    _share_bytes_when_uploads_are_copied()
    _sweep_sessions_every(SESSION_SWEEP_S)


@st.cache_data(show_spinner="Checking the models…", max_entries=4)
def _scan(_paths: Paths, stamp: tuple) -> ModelScan:
    return scan_models(_paths)


def model_scan() -> ModelScan:
    """Every model the app can use and the folders left out, with why (:func:`scan_models`: each model
    file checked against its digest), read again only when a model folder changes."""
    paths = Paths.from_env()
    return _scan(paths, models_stamp(paths))


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _load_classifier(model_dir: str, stamp: float) -> Classifier:
    return load_classifier(model_dir)


def cached_classifier(model_dir: str) -> Classifier:
    """The classifier in ``model_dir``, loaded once per process (reloaded if the folder changes)."""
    return _load_classifier(model_dir, _mtime(Path(model_dir) / CLASS_NAMES))


@st.cache_data(show_spinner=False, max_entries=64)
def _read(path: str, stamp: float) -> Any:
    return read_json(path) if path.endswith(".json") else read_csv(path)


def read_artifact(run_dir: str | Path, name: str) -> Any | None:
    """A run's JSON or CSV file (``runs.HISTORY``, ``runs.CONFIG``…), cached; None if absent."""
    path = Path(run_dir) / name
    return _read(str(path), path.stat().st_mtime) if path.is_file() else None


def read_evaluation(run_dir: str | Path, name: str) -> tuple[dict | None, list[dict] | None]:
    """The metrics and per-image predictions of a run's saved evaluation ``name`` (a split), cached;
    None for what is absent."""
    files = evaluation_files(run_dir, name)
    if files is None:
        return None, None
    return read_artifact(files.metrics.parent, files.metrics.name), read_artifact(
        files.predictions.parent, files.predictions.name
    )


@st.cache_data(show_spinner=False, max_entries=256)
def _square(path: str, stamp: float, size: int):
    return square_thumbnail(path, size)


def photo_thumbnail(path: Path, size: int = 240):
    """A square, cached thumbnail of the photo at ``path``."""
    return _square(str(path), _mtime(path), size)


def offer_dataset_download(reason: str, key: str) -> None:
    """Say why the dataset is needed (``reason``) and download it on request, with a progress bar
    that counts megabytes and estimates the time left; the page is drawn again once it is here (every
    page looks for the dataset on each run, so nothing needs a restart)."""
    st.info(f"{reason} Download it ({DATASET_SIZE_TEXT}) to this server.", icon=":material/cloud_download:")
    if not st.button("Download the dataset", icon=":material/download:", key=key):
        return
    from clothclf.data.download import download_dataset

    bar, started, shown = st.progress(0.0, text="Connecting…"), time.monotonic(), {"text": ""}

    def progress(done: int, total: int | None) -> None:
        fraction, text = download_progress(done, total, time.monotonic() - started)
        if text != shown["text"]:
            shown["text"] = text
            bar.progress(fraction, text=text)

    try:
        download_dataset(progress=progress)
    except ValueError as exc:
        bar.empty()
        show_error(exc)
    else:
        st.rerun()


def show_error(exc: Exception) -> None:
    """A library error as a plain message (never a traceback)."""
    st.error(str(exc), icon=":material/error:")


def model_picker(entries: Sequence[ModelEntry], key: str) -> ModelEntry | None:
    """A select box of ``entries`` that starts at the session's model; None (with a note) if empty."""
    if not entries:
        st.info(
            "There is no trained model yet. Train one with `clothclf train` or on the Fine-tune page.",
            icon=":material/info:",
        )
        return None
    by_path = {str(e.path): e for e in entries}
    current = find_model(entries, session_model_dir())
    options = list(by_path)
    choice = st.selectbox(
        "Model",
        options,
        index=options.index(str(current.path)) if current else 0,
        format_func=lambda path: by_path[path].label,
        key=key,
    )
    return by_path[choice]


def split_picker(splits: Sequence[str], key: str) -> str:
    """Validation or test (only the splits that were evaluated)."""
    return st.radio(
        "Images",
        list(splits),
        format_func=lambda s: f"{s.capitalize()} set",
        horizontal=True,
        key=key,
        help="The test set is shown once the model has been evaluated on it (`clothclf evaluate`).",
    )


def evaluated_run_picker(key: str, *, no_run: str, no_split: str) -> tuple[RunInfo, str, dict, list[dict]]:
    """Pick a model and an evaluated split; its run, the split, the metrics and per-image predictions.

    Stops the page with ``no_run`` (the model folder has no run) or ``no_split`` (nothing evaluated).
    """
    entry = model_picker(model_scan().entries, key=f"{key}_model")
    run = entry.run if entry else None
    if entry is not None and run is None:
        st.info(no_run, icon=":material/info:")
    if run is None:
        st.stop()
    splits = evaluated_splits(run)
    if not splits:
        st.info(no_split, icon=":material/info:")
        st.stop()
    split = split_picker(splits, key=f"{key}_split")
    return run, split, *read_evaluation(run.path, split)


def paginate(items: Sequence[Any], per_page: int, key: str) -> list[Any]:
    """The items of the page chosen with a page number input, with a "showing a–b of n" caption."""
    pages = page_count(len(items), per_page)
    page = 1
    if pages > 1:
        page = int(st.number_input(f"Page (of {pages})", 1, pages, 1, key=f"{key}-{len(items)}", width=160))
    start = (page - 1) * per_page
    st.caption(f"Showing {start + 1}–{min(start + per_page, len(items))} of {len(items)}")
    return page_of(items, page, per_page)


@st.cache_data(show_spinner=False, max_entries=64)
def _explained(model_dir: str, path: str, stamp: float, size: int):
    return explanation_overlay(cached_classifier(model_dir), Path(path).read_bytes(), size)


def prediction_card(
    row: dict[str, str], root: Path | None, *, top3: bool, explain_with: str | None = None
) -> None:
    """One saved prediction: its photo (if the dataset is on disk; with the heatmap of where the model
    in ``explain_with`` looked, if given), labels, confidence, status, top-3 bars."""
    photo = None
    if root is not None:
        try:
            photo = image_path(root, row["file"])
        except ValueError:
            photo = None
    if photo is not None and photo.is_file():
        image = photo_thumbnail(photo)
        if explain_with:
            try:
                image = _explained(explain_with, str(photo), _mtime(photo), 240)
            except ValueError as exc:
                show_error(exc)
        st.image(image, width="stretch")
    elif root is not None:  # without the dataset the page says so once, not under every card
        st.caption(f"Photo not found: `{row['file']}`")
    confidence = float(row["confidence"])
    if row.get("status") == "unknown":  # as everywhere: unknown, with the closest class beside it
        st.markdown(f"**Unknown** · closest: {display_name(row['predicted'])}, {confidence:.0%}")
    else:
        review = " · please check" if row.get("status") == "review" else ""
        st.markdown(f"**{display_name(row['predicted'])}** · {confidence:.0%}{review}")
    st.caption(f"true class: {display_name(row['true'])}")
    if top3:
        st.plotly_chart(
            plots.probability_bars(dict(parse_top3(row)), top_k=1, compact=True),
            config=CHART_CONFIG,
            key=f"top3-{row['file']}",
        )


def photo_grid(
    rows: Sequence[dict[str, str]],
    root: Path | None,
    *,
    columns: int,
    top3: bool,
    explain_with: str | None = None,
) -> None:
    """Prediction cards in a grid, ``columns`` per row (heatmaps by the model in ``explain_with``, if given)."""
    for start in range(0, len(rows), columns):
        for column, row in zip(st.columns(columns, gap="medium"), rows[start : start + columns]):
            with column:
                prediction_card(row, root, top3=top3, explain_with=explain_with)
