"""Run folders are checked when they are read: a malformed ``run.json`` or ``class_names.json`` is hidden
from every list with a logged reason and refused with a clothclf error naming the field when loaded
directly; model files are checked against the SHA-256 digests that ``run.json`` records."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from helpers import PROJECT_ROOT

import clothclf
from clothclf.errors import RunError
from clothclf.runs import list_runs, load_run, read_json, record_model_digests, verify_model_files, write_json

#: (field, tampered value) pairs of run.json that used to give wrong answers or tracebacks.
BAD_FIELDS = [
    ("temperature", float("nan")),
    ("temperature", float("inf")),
    ("temperature", 1e-300),
    ("temperature", "hot"),
    ("temperature", -1),
    ("tta", "false"),
    ("created", 20261121),
    ("seconds", 10**400),
    ("val_accuracy", "92%"),
]
BAD_CLASS_NAMES = ["red,green,blue", {"0": "red", "1": "green", "2": "blue"}, [["red"], ["green"], ["blue"]]]


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run inside a runs folder of its own."""
    return Path(shutil.copytree(tiny_run, tmp_path / "runs" / "tiny"))


def tamper_summary(run_dir: Path, **changes) -> None:
    path = run_dir / "run.json"
    path.write_text(json.dumps({**read_json(path), **changes}))  # NaN and Infinity as JSON allows


def assert_hidden_and_refused(run_dir: Path, field: str, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="clothclf"):
        assert list_runs(run_dir.parent) == []
    assert any(run_dir.name in r.getMessage() and field in r.getMessage() for r in caplog.records)
    with pytest.raises(RunError, match=field):
        load_run(run_dir)
    with pytest.raises(RunError, match=field):
        clothclf.load_classifier(run_dir)


def test_a_complete_run_records_and_verifies_the_digest_of_each_model_file(run_copy):
    digests = read_json(run_copy / "run.json")["sha256"]
    assert set(digests) == {"model.keras", "features.tflite", "head.npz"}
    verify_model_files(run_copy, list(digests))
    assert load_run(run_copy).path == run_copy and list_runs(run_copy.parent)[0].path == run_copy


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS, ids=[f"{f}={v!r}"[:40] for f, v in BAD_FIELDS])
def test_a_field_of_the_wrong_type_or_range_hides_the_run_and_is_named(run_copy, field, value, caplog):
    tamper_summary(run_copy, **{field: value})
    assert_hidden_and_refused(run_copy, field, caplog)


@pytest.mark.parametrize("summary", [["a", "list"], "a string"])
def test_a_run_json_that_is_not_an_object_is_refused(run_copy, summary, caplog):
    write_json(run_copy / "run.json", summary)
    assert_hidden_and_refused(run_copy, "JSON object", caplog)


@pytest.mark.parametrize("names", BAD_CLASS_NAMES, ids=["string", "dict", "nested"])
def test_class_names_that_are_not_a_list_of_names_are_refused(run_copy, names, caplog):
    write_json(run_copy / "class_names.json", names)
    assert_hidden_and_refused(run_copy, "class_names.json", caplog)


def test_a_model_file_with_flipped_bits_is_refused(run_copy):
    model = run_copy / "features.tflite"
    data = bytearray(model.read_bytes())
    for offset in (len(data) // 3, len(data) // 2, 2 * len(data) // 3):
        data[offset] ^= 0x10
    model.write_bytes(bytes(data))
    with pytest.raises(RunError, match="features.tflite.*SHA-256"):
        clothclf.load_classifier(run_copy)


def test_a_garbage_keras_model_is_refused_by_its_digest_and_without_one(run_copy):
    (run_copy / "model.keras").write_bytes(b"not a zip, not a model")
    with pytest.raises(RunError, match="model.keras.*SHA-256"):
        clothclf.load_classifier(run_copy, backend="keras")
    summary = read_json(run_copy / "run.json")
    del summary["sha256"]  # a run saved before digests were recorded
    write_json(run_copy / "run.json", summary)
    with pytest.raises(RunError, match="model.keras"):
        clothclf.load_classifier(run_copy, backend="keras")


def test_a_run_saved_before_digests_were_recorded_is_refused_until_they_are(run_copy):
    summary = read_json(run_copy / "run.json")
    del summary["sha256"]
    write_json(run_copy / "run.json", summary)
    with pytest.raises(RunError, match="no SHA-256 digest recorded"):  # unchecked files do not load
        clothclf.load_classifier(run_copy)
    record_model_digests(run_copy)  # what the message says to do, for a folder one trusts
    assert clothclf.load_classifier(run_copy).class_names == tuple(read_json(run_copy / "class_names.json"))


def test_the_shipped_model_records_the_digests_of_its_model_files():
    shipped = PROJECT_ROOT / "models" / "default"
    digests = read_json(shipped / "run.json")["sha256"]
    # head.npz: the trust outputs; model_int8.tflite: the served model (clothclf export --int8)
    assert set(digests) == {"model.tflite", "model_int8.tflite", "head.npz", "model.keras"}
    verify_model_files(shipped, list(digests))
