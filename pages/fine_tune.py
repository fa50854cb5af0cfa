"""Fine-tune: train a model in a background process, watch it learn, compare it with the current one, use it.

Training runs in a child process (:mod:`clothclf.app.jobs`), so this page never imports TensorFlow and
a crashed run cannot take the app down. One run at a time per server; every visitor can watch it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import streamlit as st

from clothclf.app.jobs import Job, JobStatus, active_data_dir, app_overlay, current_job, start_job
from clothclf.app.memory import memory_limit_mb, memory_warning, process_rss_mb
from clothclf.app.models_list import describe_model
from clothclf.app.training_data import check_training_data, training_data_dir
from clothclf.config import AugmentConfig, Limits, Paths, TrainConfig, default, options
from clothclf.console import counted, duration_text
from clothclf.data.datasets import LAYOUTS
from clothclf.data.overlay import RELABEL, Overlay
from clothclf.data.report import TINY_SIDE, DatasetReport
from clothclf.errors import RunError
from clothclf.evaluation import plots
from clothclf.modeling.backbones import BACKBONES, weights_cached
from clothclf.runs import (
    CLASS_NAMES,
    CONFIG,
    TRAINING_SPLIT,
    RunInfo,
    checked_run_name,
    load_run,
    new_run_name,
    zip_run,
)
from clothclf.training import phases
from clothclf.training.missing_weights import missing_weights_text
from pages._shared import (
    CHART_CONFIG,
    offer_dataset_download,
    read_artifact,
    read_evaluation,
    require_app_navigation,
    session_model_dir,
    show_error,
    use_model,
)
from pages._widgets import option_input

#: ``st.session_state[JOB_KEY]``: the id of the job this session started (only it may cancel it).
JOB_KEY = "fine_tune_job"
SIZE_KEY = "ft_image_size"
#: Options this page lays out itself; every other option with ``page=True`` goes under "More options".
LAID_OUT = frozenset(
    {
        "backbone",
        "image_size",
        "epochs",
        "lr",
        "batch_size",
        "head_only",
        "fine_tune_layers",
        "fine_tune_epochs",
        "fine_tune_lr",
    }
)
REFRESH_SECONDS = 1.0
#: How often an idle page looks for a run started elsewhere.
WATCH_SECONDS = 3.0
PHASES = {
    phases.STARTING: "Starting the training process (loading TensorFlow)",
    phases.FEATURES: "Computing backbone features (cached for the next run)",
    phases.HEAD: "Training the classification head",
    phases.TEACHER: "The teacher run classifies the training photos (distillation targets)",
    phases.FINE_TUNE: "Fine-tuning the top backbone layers",
    phases.TRAIN: "Training the whole network",
    phases.EVALUATING: "Evaluating on the validation set",
    phases.SAVING: "Saving the model (converting it to LiteRT is the long part)",
    phases.CONVERTING: "Converting the model to LiteRT (the time left is estimated from its size)",
    phases.TRUST: "Fitting when to trust an answer (feature bank of the training photos, thresholds)",
}


def duration(seconds: float | None) -> str:
    return "estimating…" if seconds is None else duration_text(seconds)


def backbone_label(name: str, image_size: int) -> str:
    spec = BACKBONES[name]
    if not spec.pretrained:
        return spec.description
    if weights_cached(name, image_size):
        note = "ImageNet weights available"
    else:
        note = "untrained: no ImageNet weights on this server"
    return f"{spec.description} · {note}"


def default_backbone(image_size: int) -> str:
    """The default backbone when its ImageNet weights are here; else the small CNN, never an untrained one."""
    return default("backbone") if weights_cached(default("backbone"), image_size) else "custom_cnn"


def show_report(report: DatasetReport) -> None:
    """The dataset report: photos per class and split, what was skipped and why, leakage, tiny photos."""
    photos = sum(sum(by_class.values()) for by_class in report.counts.values())
    st.markdown(
        f"**Dataset**: {photos} readable photos in {len(report.class_names)} classes · "
        f"{LAYOUTS.get(report.layout, report.layout)}."
    )
    st.dataframe(report.count_rows(), hide_index=True)
    if report.leakage:
        copies = "; ".join(" = ".join(group.files) for group in report.leakage[:3])
        st.warning(
            f"{len(report.leakage)} photos are in the dataset more than once, in two splits or two classes: "
            f"validation and test scores will look better than they are. Remove the copies ({copies}).",
            icon=":material/content_copy:",
        )
    if report.skipped:
        skipped = counted(len(report.skipped), "file or folder", "files or folders")
        with st.expander(f"Skipped: {skipped}, each with the reason"):
            st.dataframe([s.to_dict() for s in report.skipped], hide_index=True)
    if report.unvalidated:
        st.warning(
            f"No validation photos of {', '.join(map(repr, report.unvalidated))}: the run cannot measure "
            "how well it recognises them. Add a few of each to the validation folder.",
            icon=":material/warning:",
        )
    if report.tiny:
        st.caption(
            f"{len(report.tiny)} photos are smaller than {TINY_SIDE} px on their shorter side "
            f"(for example `{report.tiny[0]}`): they carry little detail."
        )


def decisions_text(overlay: Overlay) -> str:
    """How many of the Dataset page's decisions change the labels, and how."""
    changes = overlay.changes()
    relabelled = sum(d.action == RELABEL for d in changes)
    return (
        f"{counted(len(changes), 'decision')} from the Dataset page apply: "
        f"{counted(relabelled, 'photo')} relabelled, {len(changes) - relabelled} excluded"
    )


def show_decisions(decided: tuple[Path, Overlay] | None, applied: bool) -> None:
    """Whether the Dataset page's decisions on this dataset go into the run (the photos stay as they are)."""
    if decided is None:
        st.caption("The Dataset page has no decisions on this dataset: its labels are used as they are.")
    elif applied:
        st.info(
            f"{decisions_text(decided[1])} (the counts above are before them; the photos are unchanged).",
            icon=":material/edit_note:",
        )
    else:
        st.caption(f"Not applied: {decisions_text(decided[1]).replace(' apply', '')}.")


def progress_text(status: JobStatus) -> str:
    text = PHASES.get(status.phase, status.phase.replace("_", " ").capitalize() or "Waiting")
    if status.epochs:
        text += f" · epoch {status.epoch}/{status.epochs}"
    if status.batches:
        text += f" · {status.batch}/{status.batches} {status.unit or 'batches'}"
    return text


def time_left(status: JobStatus) -> str:
    """The estimate of the current step, "estimating…" while a counted step has not yet shown its pace,
    "—" for a step that counts nothing."""
    if status.eta is not None:
        return duration(status.eta)
    return duration(None) if status.phase in phases.FIT_PHASES or status.batches else "—"


@st.fragment(run_every=WATCH_SECONDS)
def watch_for_other_runs(paths: Paths, shown: str | None) -> None:
    """While no run is active here, redraw the page as soon as one starts elsewhere (another tab or
    visitor: one run per server), so this page shows its progress and no Start that would be refused."""
    job = current_job(paths)
    if (job.id if job is not None else None) != shown:
        st.rerun()


@st.fragment(run_every=REFRESH_SECONDS)
def live_progress(job: Job) -> None:
    """The running job, redrawn every second; a full rerun once it has ended shows its result."""
    status = job.status()
    if not status.active:
        st.rerun()
    mine = st.session_state.get(JOB_KEY) == job.id
    st.subheader("Training in progress", anchor=False)
    if status.state == "cancelling":
        st.info("Cancelling: training stops after the current batch.", icon=":material/hourglass_top:")
    st.progress(min(max(status.fraction, 0.0), 1.0), text=progress_text(status))
    elapsed, eta, accuracy = st.columns(3)
    elapsed.metric("Elapsed", duration(status.waited()))
    eta.metric("Time left in this step (estimate)", time_left(status))
    last_val = status.history[-1].get("val_accuracy") if status.history else None
    accuracy.metric("Validation accuracy (last epoch)", f"{last_val:.1%}" if last_val is not None else "—")
    if status.history:
        st.plotly_chart(plots.training_curves(status.history), config=CHART_CONFIG, key="live-curves")
    st.button(  # the run is the server's: any session, even after a reload or a restart, may stop it
        "Cancel training",
        key="ft_cancel",
        icon=":material/stop_circle:",
        on_click=job.cancel,
        disabled=status.state == "cancelling",
    )
    if overlay := job.request()["config"].get("overlay"):
        st.caption(f"This run applies the Dataset page's decisions (`{overlay}`).")
    if not mine:
        st.caption(
            "This run was started elsewhere (another visitor, or before a reload). One run at a time per server."
        )


def metric_pair(
    column, label: str, new: float | None, reference: float | None, percent: bool, reference_name: str
) -> None:
    """``new`` as a metric, with its difference from ``reference`` as the delta."""
    spec = "+.1%" if percent else "+.3f"
    known = new is not None and reference is not None
    delta = f"{new - reference:{spec}} vs {reference_name.lower()}" if known else None
    column.metric(label, format(new, spec.lstrip("+")) if new is not None else "—", delta=delta)


def compare_with_reference(run: RunInfo, paths: Paths) -> None:
    """The run's validation accuracy and macro-F1 beside those of the session's current model
    (or of the default model, once this run is the one in use)."""
    in_use = Path(session_model_dir()).resolve() == run.path.resolve()
    name = "Default model" if in_use else "Current model"
    reference = describe_model(paths.default_model_dir if in_use else session_model_dir())
    new = run.metrics("validation") or {}
    theirs = (read_evaluation(reference.path, TRAINING_SPLIT)[0] if reference else None) or {}
    their_classes = read_artifact(reference.path, CLASS_NAMES) if reference else None
    if their_classes is not None and list(their_classes) != list(run.class_names()):
        theirs = {}  # a model of other classes: its accuracy says nothing about this one
    columns = st.columns(4)
    metric_pair(columns[0], "Validation accuracy", new.get("accuracy"), theirs.get("accuracy"), True, name)
    metric_pair(columns[1], "Validation macro-F1", new.get("macro_f1"), theirs.get("macro_f1"), False, name)
    if their_classes is not None and not theirs:
        st.caption(
            f"Not compared with **{reference.label}**: it sorts photos into {len(their_classes)} classes "
            f"({', '.join(their_classes)}), this run into {len(run.class_names())} "
            f"({', '.join(run.class_names())}); accuracies over different classes cannot be compared."
        )
        return
    if reference is None or not theirs:
        st.caption(f"There is no {name.lower()} with validation metrics to compare with.")
        return
    columns[2].metric(f"{name}: accuracy", f"{theirs['accuracy']:.1%}")
    columns[3].metric(f"{name}: macro-F1", f"{theirs['macro_f1']:.3f}")
    if fingerprint(run.path) == fingerprint(reference.path):
        st.caption(f"Compared with **{reference.label}** on the same validation set.")
    else:
        st.caption(
            f"Compared with **{reference.label}**, which was validated on other data: "
            "the numbers are not directly comparable."
        )


def show_held_out(run: RunInfo) -> None:
    """How much the validation figure can be trusted, and the dataset's own test part, when it has one."""
    validation, test = run.metrics("validation") or {}, run.metrics("test")
    n_val = int(validation.get("n_images") or 0)
    if n_val:
        st.caption(
            f"Validation holds {n_val} photos: one photo more or less right moves its accuracy by {1 / n_val:.1%}."
        )
    if not test:
        st.caption("The dataset has no test part, so this run is measured on validation only.")
        return
    columns = st.columns(4)
    columns[0].metric("Test accuracy", f"{test['accuracy']:.1%}")
    columns[1].metric("Test macro-F1", f"{test['macro_f1']:.3f}")
    st.caption(f"On the dataset's test part ({test['n_images']} photos), which no training choice looked at.")


def fingerprint(model_dir: Path) -> str | None:
    """The content hash of the dataset a model was trained on (None if unknown)."""
    return (read_artifact(model_dir, CONFIG) or {}).get("dataset", {}).get("fingerprint")


def show_result(job: Job, status: JobStatus, paths: Paths) -> None:
    """How the latest job ended: its run, metrics, curves and what to do with it."""
    st.subheader("Latest training run", anchor=False)
    if status.state == "cancelled":
        st.warning("The run was cancelled; nothing was saved.", icon=":material/cancel:")
        return
    if status.state == "failed":
        st.error(f"Training failed: {status.error}", icon=":material/error:")
        return
    try:
        run = load_run(status.run_dir)
    except RunError:
        st.info(f"The run of job {job.id} is no longer on this server.", icon=":material/info:")
        return
    st.success(
        f"Training finished in {duration(status.elapsed)}: run **{run.name}**.",
        icon=":material/check_circle:",
    )
    compare_with_reference(run, paths)
    show_held_out(run)
    if digest := run.summary.get("overlay_digest"):
        st.caption(f"Trained with the Dataset page's decisions (overlay {digest[:8]}, recorded in the run).")
    report = job.dataset_report()
    if report is not None:
        with st.expander("The dataset this run trained on"):
            show_report(report)
    st.plotly_chart(plots.training_curves(run.history()), config=CHART_CONFIG, key="result-curves")
    in_use = session_model_dir() == str(run.path)
    use_col, download_col = st.columns(2)
    use_col.button(
        "In use" if in_use else "Use this model",
        key="ft_use",
        type="primary",
        icon=":material/check:",
        disabled=in_use,
        on_click=use_model,
        args=(str(run.path),),
        width="stretch",
    )
    download_col.download_button(
        "Download the model (zip)",
        data=lambda: zip_run(run.path),
        file_name=f"{run.path.name}.zip",
        mime="application/zip",
        icon=":material/download:",
        on_click="ignore",
        width="stretch",
    )
    st.caption(
        "The zip holds the Keras model, its LiteRT model, the class names, the metrics and the config."
    )


def weights_choice(backbone: str, image_size: int) -> str | None:
    """Which weights the run starts from, stating the choice plainly under the backbone picker."""
    if not BACKBONES[backbone].pretrained:
        st.caption("This small CNN has no pretrained weights: every layer is trained on your data.")
        return None
    if weights_cached(backbone, image_size):
        st.caption(f"Starts from ImageNet weights (on this server for {image_size} px).")
        return "imagenet"
    download = st.checkbox(
        "Download the ImageNet weights when training starts (needs internet access)",
        key="ft_download_weights",
    )
    if download:
        st.caption("Keras downloads the weights into its cache; the run fails if there is no internet.")
        return "imagenet"
    missing = missing_weights_text(backbone, image_size, for_page=True)
    st.warning(
        f"{missing[:1].upper()}{missing[1:]} Without them this backbone starts untrained and the whole "
        "network trains from scratch (the head-only choice does not apply).",
        icon=":material/cloud_off:",
    )
    return None


require_app_navigation()
st.title("Fine-tune")
st.caption(
    "Train a new model on the default dataset or your own photos. Training runs in a separate process "
    f"on this server, one run at a time, for at most {Limits().max_training_minutes:g} minutes; "
    "the result appears in the model list."
)

paths = Paths.from_env()
job = current_job(paths)
status = job.status() if job is not None else None
busy = status is not None and status.active

st.subheader("Model", anchor=False)
backbone_col, size_col = st.columns([3, 1])
image_size = option_input(size_col, "image_size", SIZE_KEY)
backbone_option = options()["backbone"]
backbone = backbone_col.selectbox(
    backbone_option.label,
    list(backbone_option.choices),
    index=list(backbone_option.choices).index(default_backbone(image_size)),
    format_func=lambda name: backbone_label(name, st.session_state.get(SIZE_KEY, default("image_size"))),
    help=backbone_option.help,
    key="ft_backbone",
)
weights = weights_choice(backbone, image_size)

if not paths.default_dataset_dir.is_dir():
    offer_dataset_download(
        "The default dataset is not on this server: download it to train on it, or upload a zip of "
        "your own photos below.",
        "fine_tune_download",
    )

with st.form("fine_tune_form", border=True):
    st.markdown("**Training**")
    epochs_col, lr_col, batch_col = st.columns(3)
    chosen = {
        "epochs": option_input(epochs_col, "epochs", "ft_epochs"),
        "lr": option_input(lr_col, "lr", "ft_lr"),
        "batch_size": option_input(batch_col, "batch_size", "ft_batch"),
    }
    chosen["head_only"] = st.radio(
        "What to train",
        [True, False],
        format_func=lambda only: (
            "The head only (fast: uses cached backbone features)"
            if only
            else "The head, then fine-tune the top K backbone layers"
        ),
        help=options()["head_only"].help,
        key="ft_head_only",
    )
    k_col, ft_epochs_col, ft_lr_col = st.columns(3)
    chosen["fine_tune_layers"] = option_input(k_col, "fine_tune_layers", "ft_layers")
    chosen["fine_tune_epochs"] = option_input(ft_epochs_col, "fine_tune_epochs", "ft_ft_epochs")
    chosen["fine_tune_lr"] = option_input(ft_lr_col, "fine_tune_lr", "ft_ft_lr")
    augment = st.toggle(
        "Augmentation (flips, small rotations, zoom, contrast) while the backbone trains",
        value=True,
        key="ft_augment",
    )
    st.caption(
        "Pretrained backbones: K and the fine-tuning settings apply only when fine-tuning. "
        "The small CNN trains every layer for the given epochs."
    )
    with st.expander("More options"):
        more = [name for name, spec in options().items() if spec.page and name not in LAID_OUT]
        columns = st.columns(3)
        for i, name in enumerate(more):
            chosen[name] = option_input(columns[i % 3], name, f"ft_{name}")
    st.markdown("**Data**")
    dataset_dir = paths.default_dataset_dir
    upload = st.file_uploader(
        "Your own dataset (optional): a zip with one folder of photos per class, or split folders "
        "(train/, validation/, test/, under any common name) of class folders",
        type=["zip"],
        key="ft_upload",
    )
    if dataset_dir.is_dir():
        st.caption(f"Without an upload, the default dataset is used: `{dataset_dir}`.")
    else:
        st.caption("Without an upload there is nothing to train on: download the default dataset above.")
    apply_decisions = st.toggle(
        "Apply the decisions made on the Dataset page (relabel, exclude)",
        value=True,
        key="ft_decisions",
        help="Kept per dataset beside it, never in the photos; the run records which ones it trained with.",
    )
    run_name = st.text_input(
        "Run name (optional)",
        key="ft_run_name",
        placeholder=f"{new_run_name(backbone)} (its start time and backbone)",
        help="The run's folder name on this server: letters, digits, '-', '_' and '.'.",
    )
    memory_limit = memory_limit_mb()
    start_anyway = memory_limit is not None and st.checkbox(
        "Start even if it may not fit in memory",
        key="ft_start_anyway",
        help=f"This app may use {memory_limit:,.0f} MB; a run that needs more is stopped by the system.",
    )
    check_col, start_col = st.columns(2)
    checked = check_col.form_submit_button(
        "Check the dataset", icon=":material/fact_check:", key="ft_check", width="stretch"
    )
    submitted = start_col.form_submit_button(
        "Start training",
        type="primary",
        icon=":material/play_arrow:",
        disabled=busy,
        key="ft_start",
        width="stretch",
    )

if busy:
    st.caption("A run is in progress; you can start another when it has ended.")

if submitted or checked:
    try:
        if run_name.strip():
            checked_run_name(run_name.strip())
        with st.spinner("Reading the dataset (every photo once; an upload is extracted once)…"):
            dataset_dir = training_data_dir(upload, paths, in_use=active_data_dir(paths))
        config = TrainConfig(
            data_dir=str(dataset_dir),
            backbone=backbone,
            weights=weights,
            image_size=image_size,
            augment=AugmentConfig(enabled=bool(augment)),
            # An untrained backbone trains whole: a head on its random features would learn nothing.
            **{
                **chosen,
                "head_only": chosen["head_only"] and not (BACKBONES[backbone].pretrained and weights is None),
            },
        )
        with st.spinner("Reading the dataset (every photo once; an upload is extracted once)…"):
            report = check_training_data(config, paths)
        show_report(report)
        report.raise_if_refused()
        decided = app_overlay(dataset_dir, paths)
        show_decisions(decided, apply_decisions)
        if decided is not None and apply_decisions:
            config = dataclasses.replace(config, overlay=str(decided[0]))
        too_big = memory_warning(config, memory_limit, process_rss_mb()) if submitted else None
        if too_big and not start_anyway:
            st.warning(too_big, icon=":material/memory:")
        elif submitted:
            job = start_job(config, paths, name=run_name.strip() or None)
            st.session_state[JOB_KEY] = job.id
            st.rerun()
    except ValueError as exc:  # ClothclfError (refused dataset, run in progress, …) and bad config values
        show_error(exc)

job = current_job(paths)  # again: a refused start means another session's run has begun since
status = job.status() if job is not None else None
busy = status is not None and status.active
if job is not None and status is not None:
    st.divider()
    if busy:
        live_progress(job)
    else:
        show_result(job, status, paths)
if not busy:
    watch_for_other_runs(paths, job.id if job is not None else None)
