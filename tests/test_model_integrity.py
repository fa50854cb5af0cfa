"""A model loads only if its files match the SHA-256 digests its run.json records: a deleted or emptied
run.json refuses instead of skipping the check, and the app lists only loadable models, naming the
folders it leaves out (with why) on the Models page."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import PROJECT_ROOT
from streamlit.testing.v1 import AppTest

from clothclf.app.models_list import list_models, scan_models
from clothclf.config import Paths
from clothclf.errors import RunError
from clothclf.runs import (
    LITERT_MODEL,
    SUMMARY,
    read_json,
    record_model_digests,
    verify_model_files,
    write_json,
)
from clothclf.serving.classifier import load_classifier

SHIPPED = PROJECT_ROOT / "models" / "default"
#: The shipped model's files a LiteRT classifier needs (its Keras model is left out: 10 MB, unused).
SERVING = ("class_names.json", "config.json", LITERT_MODEL, "trust.npz", SUMMARY, "metrics_validation.json")


def copy_model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in SERVING:
        shutil.copy(SHIPPED / name, folder / name)
    return folder


def flip_a_bit(path: Path, offset: int = 100_000) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("summary", ["deleted", "{}", "no digest of the model"])
def test_a_model_without_recorded_digests_is_refused_not_loaded_unchecked(tmp_path, summary):
    folder = copy_model(tmp_path / "model")
    flip_a_bit(folder / LITERT_MODEL)  # what a missing digest would let through
    if summary == "deleted":
        (folder / SUMMARY).unlink()
    elif summary == "{}":
        write_json(folder / SUMMARY, {})
    else:
        recorded = read_json(folder / SUMMARY)
        write_json(folder / SUMMARY, {**recorded, "sha256": {"head.npz": recorded["sha256"]["head.npz"]}})
    with pytest.raises(RunError, match="has no SHA-256 digest recorded .* does not load it"):
        load_classifier(folder)
    with pytest.raises(RunError, match="record_model_digests"):
        verify_model_files(folder, [LITERT_MODEL])


def test_recording_the_digests_of_a_trusted_folder_makes_it_load(tmp_path):
    folder = copy_model(tmp_path / "model")
    (folder / SUMMARY).unlink()
    record_model_digests(folder)  # the way the refusal names
    assert set(read_json(folder / SUMMARY)["sha256"]) == {LITERT_MODEL}
    assert load_classifier(folder).class_names


def test_only_loadable_runs_are_listed_and_the_others_are_named_with_why(tmp_path):
    runs = tmp_path / "runs"
    copy_model(runs / "good")
    flip_a_bit(copy_model(runs / "flipped") / LITERT_MODEL)
    (copy_model(runs / "unrecorded") / SUMMARY).unlink()
    paths = Paths(tmp_path / "data", tmp_path / "cache", runs, SHIPPED)
    scan = scan_models(paths)
    shipped = [f.name for f in sorted(SHIPPED.parent.iterdir()) if f.is_dir() and f != SHIPPED]
    assert [e.path.name for e in scan.entries] == ["default", *shipped, "good"]
    assert [e.path.name for e in list_models(paths)] == ["default", *shipped, "good"]
    reasons = {left.path.name: left.reason for left in scan.left_out}
    assert set(reasons) == {"flipped", "unrecorded"}
    assert "does not match the SHA-256 digest recorded in run.json" in reasons["flipped"]
    assert "holds a model but no run.json" in reasons["unrecorded"]
    for entry in scan.entries:
        load_classifier(entry.path)  # a listed model loads


def test_models_page_names_the_folders_it_leaves_out(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    copy_model(runs / "good")
    flip_a_bit(copy_model(runs / "flipped") / LITERT_MODEL)
    monkeypatch.setenv("CLOTHCLF_RUNS_DIR", str(runs))
    monkeypatch.setenv("CLOTHCLF_MODEL_DIR", str(SHIPPED))
    app = AppTest.from_file(str(PROJECT_ROOT / "streamlit_app.py"), default_timeout=120).run()
    app.switch_page("pages/models.py").run()
    assert not app.exception, [e.value for e in app.exception]
    [warning] = [w.value for w in app.warning if "flipped" in w.value]
    assert warning.startswith("**flipped** is not offered: ") and "does not match the SHA-256" in warning
    offered = list_models(Paths.from_env())
    assert "flipped" not in {e.path.name for e in offered}
    assert len(app.selectbox(key="models_choice").options) == len(offered)
