"""The Fine-tune page, driven with Streamlit's AppTest on the tiny synthetic dataset.

The default dataset is the synthetic one (``CLOTHCLF_DATA_DIR`` points at it, as on a server whose
data folder is the dataset). Training runs in a real child process; the test polls by re-running
the app until the result appears.
"""

from __future__ import annotations

import time
from pathlib import Path

from helpers import zip_bytes
from streamlit.testing.v1 import AppTest

from clothclf.app.jobs import current_job
from clothclf.app.training_data import uploads_dir
from clothclf.config import Paths, options
from clothclf.data.datasets import create_dataset, dataset_fingerprint
from clothclf.data.overlay import (
    EXCLUDE,
    KEEP,
    RELABEL,
    Decision,
    Overlay,
    file_digest,
    overlay_path,
    read_overlay,
    write_overlay,
)
from clothclf.runs import list_runs, load_run

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
TIMEOUT = 300  # seconds for the whole training run on a loaded two-core machine


def fine_tune_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    return at.switch_page("pages/fine_tune.py").run()


def fill_tiny_form(at: AppTest) -> None:
    at.number_input(key="ft_image_size").set_value(32).run()
    at.number_input(key="ft_epochs").set_value(2)
    at.selectbox(key="ft_batch").set_value(8)
    at.radio(key="ft_head_only").set_value(True)
    at.toggle(key="ft_augment").set_value(False)


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_training_from_the_page_registers_a_run_and_shows_its_metrics(
    synthetic_dataset, current_model, no_cached_weights, monkeypatch
):
    monkeypatch.setenv("CLOTHCLF_DATA_DIR", str(synthetic_dataset))
    at = fine_tune_page()
    assert not at.exception
    # An empty Keras cache: the default backbone's weights come with its package, so it is preselected;
    # a backbone whose weights would need a download is said to be untrained.
    backbone = at.selectbox(key="ft_backbone")
    assert backbone.value == "efficientnet_lite2"
    assert "ImageNet weights available" in backbone.format_func("efficientnet_lite2")
    assert "untrained: no ImageNet weights" in backbone.format_func("mobilenet_v2")
    assert str(synthetic_dataset) in texts(at.caption)
    backbone.set_value("custom_cnn").run()  # the cheapest run to start from the page
    fill_tiny_form(at)
    at.button(key="ft_start").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert at.session_state["fine_tune_job"] == current_job(Paths.from_env()).id

    visitor = fine_tune_page()  # another session sees the run, cannot start another, may cancel it
    assert "Training in progress" in texts(visitor.subheader)
    assert visitor.button(key="ft_start").disabled
    assert not visitor.button(key="ft_cancel").disabled

    deadline = time.monotonic() + TIMEOUT
    while not (at.success or at.error or at.warning):
        assert time.monotonic() < deadline, "training did not finish in time"
        time.sleep(1)
        at.run()
    assert not at.exception and not at.error, texts(at.error)
    assert "Training finished" in at.success[0].value

    runs = list_runs(Paths.from_env().runs_dir)
    assert len(runs) == 1
    metrics = runs[0].metrics("validation")
    shown = {m.label: m for m in at.metric}
    assert shown["Validation accuracy"].value == f"{metrics['accuracy']:.1%}"
    assert shown["Validation macro-F1"].value == f"{metrics['macro_f1']:.3f}"
    assert shown["Validation accuracy"].delta == f"{metrics['accuracy'] - 0.25:+.1%} vs current model"
    assert shown["Current model: accuracy"].value == "25.0%"
    assert at.download_button[0].label == "Download the model (zip)"

    at.button(key="ft_use").click().run()
    assert at.session_state["model_dir"] == str(runs[0].path)
    assert at.button(key="ft_use").label == "In use"
    # Once in use, the run is compared with the default model (here the stand-in) instead of itself.
    assert {m.label: m.value for m in at.metric}["Default model: accuracy"] == "25.0%"


def test_a_zip_without_class_folders_is_a_clear_error(current_model):
    at = fine_tune_page()
    fill_tiny_form(at)
    at.file_uploader(key="ft_upload").set_value(
        ("photos.zip", zip_bytes({"notes/readme.txt": b"no images here"}), "application/zip")
    )
    at.button(key="ft_start").click().run()
    assert not at.exception
    assert "no photo clothclf can read (1 file: not a photo (.txt))" in texts(at.error)
    assert current_job(Paths.from_env()) is None
    assert not list(uploads_dir(Paths.from_env()).glob("*"))  # nothing kept
    assert not (Paths.from_env().data_dir / "uploads").exists()


def test_a_missing_default_dataset_is_a_clear_error(tmp_path, current_model, monkeypatch):
    monkeypatch.setenv("CLOTHCLF_DATA_DIR", str(tmp_path / "nowhere"))
    at = fine_tune_page()
    assert "not on this server" in texts(at.info) and at.button(key="fine_tune_download")
    at.button(key="ft_start").click().run()
    assert not at.exception
    assert "default dataset is not on this server" in texts(at.error)
    assert current_job(Paths.from_env()) is None


def test_every_page_option_has_its_declared_widget(current_model, no_cached_weights):
    """Options are declared once on TrainConfig: each one the page shows gets its label and help from there."""
    at = fine_tune_page()
    widgets = [*at.number_input, *at.selectbox, *at.toggle, *at.radio]
    labels = {w.label for w in widgets}
    helps = {w.help for w in widgets}
    for name, spec in options().items():
        if spec.page and name != "head_only":  # head_only is a radio with its own wording
            assert spec.label in labels, name
        if spec.page:
            assert spec.help in helps, name
    assert at.number_input(key="ft_image_size").min == options()["image_size"].minimum


def test_a_run_that_will_not_fit_in_memory_is_not_started_without_consent(
    synthetic_dataset, current_model, no_cached_weights, monkeypatch
):
    monkeypatch.setenv("CLOTHCLF_DATA_DIR", str(synthetic_dataset))
    monkeypatch.setattr("clothclf.app.memory.memory_limit_mb", lambda *args: 300.0)
    at = fine_tune_page()
    fill_tiny_form(at)
    at.button(key="ft_start").click().run()
    assert not at.exception
    assert "only about" in texts(at.warning) and "too small to train" in texts(at.warning)
    assert current_job(Paths.from_env()) is None, "nothing was started"
    assert at.checkbox(key="ft_start_anyway").label == "Start even if it may not fit in memory"


def dataset_page_decisions(dataset: Path) -> Path:
    """What the Dataset page would save for ``dataset``: two photos relabelled, one excluded, one kept."""
    root = create_dataset(dataset).root

    def decision(file: str, action: str, label: str | None = None) -> Decision:
        return Decision(file, action, label, file_digest(root / file))

    overlay = Overlay(
        dataset_fingerprint(create_dataset(dataset)),
        (
            decision("train/red/red_0.png", RELABEL, "green"),
            decision("train/blue/blue_0.png", RELABEL, "red"),
            decision("train/red/red_1.png", EXCLUDE),
            decision("train/red/red_2.png", KEEP),
        ),
    )
    return write_overlay(overlay_path(Paths.from_env(), overlay.fingerprint), overlay)


def test_the_dataset_pages_decisions_are_shown_and_trained_with(
    synthetic_dataset, current_model, no_cached_weights, monkeypatch
):
    monkeypatch.setenv("CLOTHCLF_DATA_DIR", str(synthetic_dataset))
    overlay_file = dataset_page_decisions(synthetic_dataset)
    at = fine_tune_page()
    at.selectbox(key="ft_backbone").set_value("custom_cnn").run()
    fill_tiny_form(at)
    at.toggle(key="ft_decisions").set_value(False)
    at.button(key="ft_check").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert "Not applied: 3 decisions from the Dataset page: 2 photos relabelled, 1 excluded." in texts(
        at.caption
    )

    at.toggle(key="ft_decisions").set_value(True)
    at.button(key="ft_start").click().run()
    assert not at.exception and not at.error, texts(at.error)
    job = current_job(Paths.from_env())
    assert job.request()["config"]["overlay"] == str(overlay_file)
    assert f"This run applies the Dataset page's decisions (`{overlay_file}`)." in texts(at.caption)

    status = job.wait(TIMEOUT)
    assert status.state == "finished", status.error
    run = load_run(status.run_dir)
    assert run.summary["overlay_digest"] == read_overlay(overlay_file).digest()
    assert run.config()["dataset"]["sizes"]["train"] == 3 * 12 - 1  # the excluded photo left out
    at.run()
    assert not at.exception
    assert f"overlay {run.summary['overlay_digest'][:8]}" in texts(at.caption)


def test_the_check_says_which_decisions_will_apply(synthetic_dataset, current_model, monkeypatch):
    monkeypatch.setenv("CLOTHCLF_DATA_DIR", str(synthetic_dataset))
    at = fine_tune_page()
    at.button(key="ft_check").click().run()
    assert "The Dataset page has no decisions on this dataset" in texts(at.caption)
    dataset_page_decisions(synthetic_dataset)
    at.button(key="ft_check").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert "3 decisions from the Dataset page apply: 2 photos relabelled, 1 excluded" in texts(at.info)
    assert current_job(Paths.from_env()) is None  # a check starts nothing
