"""The Streamlit app run headless with ``streamlit.testing.v1.AppTest`` on the tiny fixture model."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import urllib.error
from collections import Counter
from pathlib import Path

import pytest
from helpers import PROJECT_ROOT
from PIL import Image
from streamlit.testing.v1 import AppTest

from clothclf.config import Limits
from clothclf.data.datasets import create_dataset
from clothclf.evaluation.evaluate import evaluate_classifier
from clothclf.runs import read_csv, read_json, write_csv, write_json
from clothclf.serving.classifier import load_classifier

APP = PROJECT_ROOT / "streamlit_app.py"
PAGES = ("pages/classify.py", "pages/report.py", "pages/mistakes.py", "pages/models.py", "pages/fine_tune.py")
TIMEOUT = 120


def add_test_split(run_dir: Path) -> Path:
    """Evaluate the run on its dataset's test split and save metrics and predictions, as ``clothclf
    evaluate`` does, so the app has a test split to show."""
    dataset = create_dataset(read_json(run_dir / "config.json")["dataset"]["root"])
    metrics, rows = evaluate_classifier(
        load_classifier(run_dir, backend="litert"), dataset.test, dataset.root
    )
    write_json(run_dir / "metrics_test.json", metrics)
    write_csv(run_dir / "predictions_test.csv", rows)
    return run_dir


def png(color: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def evaluated_model(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run with validation and test evaluations."""
    return add_test_split(Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("model") / "tiny")))


@pytest.fixture
def app(evaluated_model, tmp_path, monkeypatch) -> AppTest:
    """The app with the evaluated tiny model as default and one more run to pick and compare."""
    runs = tmp_path / "runs"
    second = shutil.copytree(evaluated_model, runs / "second")
    summary = read_json(second / "run.json")
    write_json(second / "run.json", {**summary, "name": "second"})
    monkeypatch.setenv("CLOTHCLF_MODEL_DIR", str(evaluated_model))
    monkeypatch.setenv("CLOTHCLF_RUNS_DIR", str(runs))
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_every_page_renders(app):
    assert_no_exception(app)
    assert [t.value for t in app.title] == ["Classify clothing photos"]
    for page in PAGES:
        app.switch_page(page).run()
        assert_no_exception(app)
        assert not app.error, [e.value for e in app.error]
        assert app.title, page


def test_sidebar_shows_the_session_model(app):
    assert "tiny (default)" in [m.value.strip("*") for m in app.sidebar.markdown]
    assert app.session_state["model_dir"] == os.environ["CLOTHCLF_MODEL_DIR"]


def test_classify_one_upload_shows_label_percentage_and_chart(app, evaluated_model):
    app.file_uploader[0].set_value(("blue.png", png((0, 0, 230)), "image/png")).run()
    assert_no_exception(app)
    [label] = [h.value for h in app.header]
    assert label.lower() in read_json(evaluated_model / "class_names.json")
    [confidence] = app.metric
    assert confidence.label == "Confidence" and confidence.value.endswith("%")
    assert 0 < int(confidence.value.rstrip("%")) <= 100
    assert len(app.get("plotly_chart")) == 1


def with_trust(model: Path, dest: Path, **thresholds: float) -> str:
    """A copy of ``model`` whose run.json records other trust thresholds."""
    copy = Path(shutil.copytree(model, dest))
    summary = read_json(copy / "run.json")
    write_json(copy / "run.json", {**summary, "trust": {**summary["trust"], **thresholds}})
    return str(copy)


def test_classify_says_not_one_of_the_classes_or_please_check(app, evaluated_model, tmp_path):
    app.session_state["model_dir"] = with_trust(evaluated_model, tmp_path / "unknown", unknown_threshold=-1e9)
    app.file_uploader[0].set_value(("x.png", png((90, 90, 90)), "image/png")).run()
    assert_no_exception(app)
    assert [h.value for h in app.header] == ["Unknown"] and not app.metric
    assert any("Not one of the 3 classes" in m.value for m in app.markdown)
    app.session_state["model_dir"] = with_trust(
        evaluated_model, tmp_path / "review", unknown_threshold=1e9, review_confidence=1.01
    )
    app.run()
    assert "Please check" in app.warning[0].value and app.metric[0].label == "Confidence"
    app.toggle(key="heatmap").set_value(True).run()
    assert_no_exception(app)
    assert len(app.get("image")) == 1 and not app.error


def test_batch_counts_statuses_and_filters(app, evaluated_model, tmp_path):
    app.session_state["model_dir"] = with_trust(
        evaluated_model, tmp_path / "review", unknown_threshold=1e9, review_confidence=1.01
    )
    files = [("a.png", png((200, 0, 0)), "image/png"), ("b.png", png((0, 200, 0)), "image/png")]
    app.file_uploader[0].set_value(files).run()
    assert_no_exception(app)
    assert any("**0** accepted · **2** to check · **0**" in m.value for m in app.markdown)
    assert list(app.dataframe[0].value["status"]) == ["review", "review"]
    app.multiselect(key="status_filter").set_value(["Accepted"]).run()
    assert len(app.get("image")) == 0


def test_report_shows_risk_coverage_and_the_operating_point(app):
    app.switch_page("pages/report.py").run()
    assert_no_exception(app)
    assert any(
        "This run's operating point" in m.value and "set aside as unknown" in m.value for m in app.markdown
    )


def test_mistakes_show_where_the_model_looked(app):
    app.switch_page("pages/mistakes.py").run()
    app.toggle(key="mistakes_heatmap").set_value(True).run()
    assert_no_exception(app)
    assert not app.error


def test_classify_many_uploads_with_a_bad_file(app):
    files = [
        ("a.png", png((200, 0, 0)), "image/png"),
        ("broken.png", b"not an image", "image/png"),
        ("b.png", png((0, 200, 0)), "image/png"),
    ]
    app.file_uploader[0].set_value(files).run()
    assert_no_exception(app)
    [error] = app.error
    assert "broken.png" in error.value and "not an image" in error.value
    table = app.dataframe[0].value
    assert list(table["file"]) == ["a.png", "broken.png", "b.png"]
    assert table["label"].notna().tolist() == [True, False, True]
    assert len(app.get("download_button")) == 1
    assert len(app.get("image")) == 2  # thumbnails of the two good photos


def test_try_an_example_classifies_a_dataset_photo(app):
    assert not app.metric
    app.button(key="example-0").click().run()
    assert_no_exception(app)
    assert app.metric[0].value.endswith("%")


def test_missing_model_is_a_plain_error(app, tmp_path):
    app.session_state["model_dir"] = str(tmp_path / "nowhere")
    app.run()
    assert_no_exception(app)
    assert "not a clothclf model folder" in app.error[0].value


def test_paginate_shows_the_chosen_page():
    def script():
        import streamlit as st

        from pages._shared import paginate

        st.text(repr(paginate(list(range(30)), 12, key="page")))

    at = AppTest.from_function(script, default_timeout=TIMEOUT).run()
    assert at.text[0].value == repr(list(range(12)))
    at.number_input[0].set_value(3).run()
    assert at.text[0].value == repr(list(range(24, 30)))
    assert at.caption[0].value == "Showing 25–30 of 30"


def test_models_page_switches_the_session_model(app):
    app.switch_page("pages/models.py").run()
    second = str(Path(os.environ["CLOTHCLF_RUNS_DIR"]) / "second")
    assert len(app.dataframe[0].value) == 2
    assert len(app.get("plotly_chart")) == 2  # the comparison charts
    app.selectbox(key="models_choice").set_value(second).run()
    app.button[0].click().run()
    assert_no_exception(app)
    assert app.session_state["model_dir"] == second
    assert app.button[0].label == "In use" and app.button[0].disabled
    assert any("uses **second**" in c.value for c in app.caption)


def saved_predictions(split: str) -> list[dict[str, str]]:
    return read_csv(Path(os.environ["CLOTHCLF_MODEL_DIR"]) / f"predictions_{split}.csv")


def test_report_test_split_and_confusion_cell(app):
    app.switch_page("pages/report.py").run()
    app.radio(key="report_split").set_value("test").run()
    assert_no_exception(app)
    assert any("in the test set" in c.value for c in app.caption)
    assert {m.label for m in app.metric} >= {
        "Accuracy",
        "Macro-F1",
        "Top-3 accuracy",
        "Log loss",
        "ECE",
        "R²",
    }
    cells = Counter((row["true"], row["predicted"]) for row in saved_predictions("test"))
    (true, predicted), count = cells.most_common(1)[0]
    app.selectbox(key="report_cell_true").set_value(true).run()
    app.selectbox(key="report_cell_predicted").set_value(predicted).run()
    assert_no_exception(app)
    assert len(app.get("image")) == min(count, 12)


def test_mistakes_page_lists_the_wrong_predictions(app):
    app.switch_page("pages/mistakes.py").run()
    assert_no_exception(app)
    rows = saved_predictions("validation")
    wrong = [row for row in rows if row["true"] != row["predicted"]]
    assert app.subheader[0].value == f"{len(wrong)} of {len(wrong)} mistakes"
    assert len(app.get("image")) == min(len(wrong), 12)
    app.slider(key="mistakes_confidence").set_value(1.0).run()
    assert app.subheader[0].value == f"0 of {len(wrong)} mistakes"


def test_mistakes_without_the_dataset_offers_the_download(app, evaluated_model, tmp_path, monkeypatch):
    moved = shutil.copytree(evaluated_model, tmp_path / "moved")
    config = read_json(moved / "config.json")
    dataset = Path(config["dataset"]["root"])
    # A run on the default dataset records no folder; the default dataset is not downloaded yet.
    write_json(moved / "config.json", {**config, "dataset": {**config["dataset"], "root": None}})
    monkeypatch.setenv("CLOTHCLF_MODEL_DIR", str(moved))
    data_dir = Path(os.environ["CLOTHCLF_DATA_DIR"])
    calls = []

    def fake_download(dest=None, *, progress=None, **kwargs):
        calls.append(dest)
        progress(0, 100)
        progress(100, 100)
        return Path(shutil.copytree(dataset, data_dir / "clothing-dataset-small"))

    monkeypatch.setattr("clothclf.data.download.download_dataset", fake_download)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("pages/mistakes.py").run()
    assert "not on this server" in at.info[0].value
    assert not at.get("image")
    assert not [c for c in at.caption if "Photo not found" in c.value]  # said once, not under every card
    at.button[0].click().run()
    assert_no_exception(at)
    assert calls == [None]
    assert at.get("image"), "the photos show once the dataset is downloaded"
    assert not at.info


def test_a_run_whose_own_photos_are_gone_says_so_and_shows_no_other_photos(
    app, evaluated_model, tmp_path, monkeypatch
):
    moved = shutil.copytree(evaluated_model, tmp_path / "moved")
    config = read_json(moved / "config.json")
    write_json(
        moved / "config.json", {**config, "dataset": {**config["dataset"], "root": str(tmp_path / "gone")}}
    )
    monkeypatch.setenv("CLOTHCLF_MODEL_DIR", str(moved))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("pages/mistakes.py").run()
    assert_no_exception(at)
    assert "no longer on this computer" in at.info[0].value
    assert not at.get("image") and not at.button, "no download offer: the default dataset is not its photos"


def test_a_failed_dataset_download_says_why_and_leaves_no_progress_bar(
    app, evaluated_model, tmp_path, monkeypatch
):
    moved = shutil.copytree(evaluated_model, tmp_path / "moved")
    config = read_json(moved / "config.json")
    write_json(moved / "config.json", {**config, "dataset": {**config["dataset"], "root": None}})
    monkeypatch.setenv("CLOTHCLF_MODEL_DIR", str(moved))

    def offline(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))

    monkeypatch.setattr("urllib.request.urlopen", offline)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("pages/mistakes.py").run()
    at.button[0].click().run()
    assert_no_exception(at)
    [error] = at.error
    assert "github.com could not be reached" in error.value and "Errno" not in error.value
    assert not at.get("progress")


def without_dataset_root(model: Path, dest: Path) -> tuple[Path, Path]:
    """A copy of ``model`` that, like a run on the default dataset, records no dataset folder; and the
    folder of the photos it was trained on."""
    moved = shutil.copytree(model, dest)
    config = read_json(moved / "config.json")
    write_json(moved / "config.json", {**config, "dataset": {**config["dataset"], "root": None}})
    return moved, Path(config["dataset"]["root"])


def fake_download(dataset: Path, calls: list):
    """A stand-in for :func:`download_dataset` that copies ``dataset`` into the data folder."""

    def download(dest=None, *, progress=None, **kwargs):
        calls.append(dest)
        progress(0, 100)
        progress(100, 100)
        return Path(
            shutil.copytree(dataset, Path(os.environ["CLOTHCLF_DATA_DIR"]) / "clothing-dataset-small")
        )

    return download


def test_classify_without_the_dataset_offers_the_download_then_the_examples(
    app, evaluated_model, tmp_path, monkeypatch
):
    moved, dataset = without_dataset_root(evaluated_model, tmp_path / "moved")
    monkeypatch.setenv("CLOTHCLF_MODEL_DIR", str(moved))
    calls = []
    monkeypatch.setattr("clothclf.data.download.download_dataset", fake_download(dataset, calls))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert "Example photos come from the dataset" in at.info[0].value
    assert not at.get("image")
    at.button(key="classify_download").click().run()
    assert_no_exception(at)
    assert calls == [None] and not at.info
    assert at.get("image") and [b for b in at.button if b.label == "Try this"], "examples without a restart"


def test_fine_tune_without_the_dataset_offers_the_download(app, evaluated_model, tmp_path, monkeypatch):
    _, dataset = without_dataset_root(evaluated_model, tmp_path / "moved")
    calls = []
    monkeypatch.setattr("clothclf.data.download.download_dataset", fake_download(dataset, calls))
    app.switch_page("pages/fine_tune.py").run()
    assert any("The default dataset is not on this server" in i.value for i in app.info)
    app.button(key="fine_tune_download").click().run()
    assert_no_exception(app)
    assert calls == [None]
    assert not any("not on this server" in i.value for i in app.info)
    assert any("the default dataset is used" in c.value for c in app.caption)


def test_many_photos_over_the_batch_limit_get_one_message(app):
    limit = Limits().max_files_per_batch
    files = [(f"p{i}.png", png((i, 0, 0), (16, 16)), "image/png") for i in range(limit + 7)]
    app.file_uploader[0].set_value(files).run()
    assert_no_exception(app)
    [error] = app.error
    named = ", ".join(f"p{i}.png" for i in range(limit, limit + 5))
    assert f"**7 photos** ({named} and 2 more)" in error.value
    assert f"at most {limit} files per batch" in error.value
    assert app.subheader[0].value == f"{limit} photos classified"


def test_a_mistake_called_unknown_reads_as_unknown(app, evaluated_model, tmp_path, monkeypatch):
    copy = Path(shutil.copytree(evaluated_model, tmp_path / "unknowns"))
    rows = read_csv(copy / "predictions_validation.csv")
    write_csv(copy / "predictions_validation.csv", [{**row, "status": "unknown"} for row in rows])
    monkeypatch.setenv("CLOTHCLF_MODEL_DIR", str(copy))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("pages/mistakes.py").run()
    assert_no_exception(at)
    cards = [m.value for m in at.markdown if "closest:" in m.value]
    assert cards and all(card.startswith("**Unknown** · closest: ") for card in cards)
    assert not [m.value for m in at.markdown if "not one of the classes" in m.value]


def test_switching_the_report_split_drops_a_cell_that_is_empty_there(
    app, evaluated_model, tmp_path, monkeypatch
):
    # A copy whose test split has no correct answer for the first class: that cell is empty on test.
    model = Path(shutil.copytree(evaluated_model, tmp_path / "model"))
    names = read_json(model / "class_names.json")
    first, other = names[0], names[1]
    rows = read_csv(model / "predictions_test.csv")
    rows = [{**r, "predicted": other} if r["true"] == r["predicted"] == first else r for r in rows]
    write_csv(model / "predictions_test.csv", rows)
    matrix = [[sum(r["true"] == t and r["predicted"] == p for r in rows) for p in names] for t in names]
    write_json(
        model / "metrics_test.json", {**read_json(model / "metrics_test.json"), "confusion_matrix": matrix}
    )
    assert any(r["true"] == r["predicted"] == first for r in read_csv(model / "predictions_validation.csv"))
    monkeypatch.setenv("CLOTHCLF_MODEL_DIR", str(model))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("pages/report.py").run()
    at.selectbox(key="report_cell_true").set_value(first).run()
    at.selectbox(key="report_cell_predicted").set_value(first).run()
    assert at.get("image") and not [c for c in at.caption if "No images in this cell" in c.value]
    at.radio(key="report_split").set_value("test").run()
    assert_no_exception(at)
    assert (at.selectbox(key="report_cell_true").value, at.selectbox(key="report_cell_predicted").value) != (
        first,
        first,
    )
    assert not [c for c in at.caption if "No images in this cell" in c.value]


def test_models_of_different_classes_are_not_compared_class_by_class(app):
    second = Path(os.environ["CLOTHCLF_RUNS_DIR"]) / "second"
    write_json(second / "class_names.json", ["a", "b", "c"])
    app.switch_page("pages/models.py").run()
    assert_no_exception(app)
    assert len(app.get("plotly_chart")) == 1  # the learning curves only
    assert "different classes" in app.info[0].value
    table = app.dataframe[0]
    assert list(table.value["classes"]) == ["3: blue, green, red", "3: a, b, c"]
    assert list(table.value["dataset"])[1] == "ds"  # the folder of the photos it trained on
    assert table.proto.placeholder == "–"  # what a missing value (a split never evaluated) shows


def test_classify_page_does_not_import_tensorflow(evaluated_model):
    """The landing page stays light: a LiteRT model, no TensorFlow or Keras, even after classifying."""
    script = textwrap.dedent(
        f"""
        import sys
        from streamlit.testing.v1 import AppTest
        at = AppTest.from_file({str(APP)!r}, default_timeout={TIMEOUT}).run()
        at.file_uploader[0].set_value(("x.png", {png((10, 20, 200))!r}, "image/png")).run()
        assert not at.exception and at.metric, "the page did not classify"
        print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
        """
    )
    env = {**os.environ, "CLOTHCLF_MODEL_DIR": str(evaluated_model)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_a_head_only_report_mentions_no_dashed_line(app):
    app.switch_page("pages/report.py").run()
    assert_no_exception(app)
    assert not [c.value for c in app.caption if "dashed line" in c.value]
