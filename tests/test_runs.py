"""Run folders: atomic writes, listing that hides partial and broken folders, loading, bundle zips."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from clothclf.errors import RunError
from clothclf.runs import (
    PARTIAL_PREFIX,
    atomic_run_dir,
    list_runs,
    load_run,
    read_json,
    write_csv,
    write_json,
    zip_run,
)


def fake_run(folder: Path, created: str = "2026-01-01T00:00:00+00:00", status: str = "complete") -> Path:
    """A run folder with every file a run has (the model files are placeholder bytes)."""
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"keras model bytes")
    (folder / "model.tflite").write_bytes(b"tflite model bytes")
    write_json(folder / "class_names.json", ["a", "b"])
    write_json(folder / "config.json", {"train": {"backbone": "mobilenet_v2"}})
    write_json(folder / "metrics_validation.json", {"accuracy": 0.5, "macro_f1": 0.4})
    write_csv(folder / "history.csv", [{"phase": "head", "epoch": 1, "loss": 0.7}])
    write_csv(folder / "predictions_validation.csv", [{"file": "validation/a/x.png", "true": "a"}])
    write_json(folder / "run.json", {"name": folder.name, "status": status, "created": created})
    return folder


def test_atomic_run_dir_renames_into_place_only_on_success(tmp_path):
    final = tmp_path / "runs" / "ok"
    with atomic_run_dir(final) as work:
        assert work.name == f"{PARTIAL_PREFIX}ok" and work.is_dir()
        (work / "file.txt").write_text("done")
        assert not final.exists()
    assert (final / "file.txt").read_text() == "done"
    assert not (tmp_path / "runs" / f"{PARTIAL_PREFIX}ok").exists()


def test_atomic_run_dir_leaves_nothing_when_the_block_fails(tmp_path):
    final = tmp_path / "broken"
    with pytest.raises(OSError, match="disk full"), atomic_run_dir(final) as work:
        (work / "half.txt").write_text("half")
        raise OSError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_atomic_run_dir_refuses_an_existing_folder(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(RunError, match="already exists"), atomic_run_dir(tmp_path / "taken"):
        pass


def test_list_runs_shows_complete_runs_newest_first_and_hides_the_rest(tmp_path):
    old = fake_run(tmp_path / "old", created="2026-01-01T00:00:00+00:00")
    new = fake_run(tmp_path / "new", created="2026-02-01T00:00:00+00:00")
    fake_run(tmp_path / f"{PARTIAL_PREFIX}killed")
    fake_run(tmp_path / "unfinished", status="running")
    (fake_run(tmp_path / "no-model") / "model.keras").unlink()
    (tmp_path / "no-model" / "model.tflite").unlink()
    (fake_run(tmp_path / "no-classes") / "class_names.json").unlink()
    (fake_run(tmp_path / "bad-json") / "run.json").write_text("{not json")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a run")
    assert [run.path for run in list_runs(tmp_path)] == [new, old]
    assert list_runs(tmp_path / "missing") == []


def test_load_run_reads_a_complete_run(tmp_path):
    run = load_run(fake_run(tmp_path / "r1"))
    assert run.name == "r1"
    assert run.class_names() == ["a", "b"]
    assert run.metrics("validation") == {"accuracy": 0.5, "macro_f1": 0.4}
    assert run.metrics("test") is None and run.predictions("test") is None
    assert run.history() == [{"phase": "head", "epoch": "1", "loss": "0.7"}]


@pytest.mark.parametrize("damage", ["missing", "no run.json", "status running", "no model"])
def test_load_run_rejects_missing_or_incomplete_runs(tmp_path, damage):
    folder = tmp_path / "r"
    if damage != "missing":
        fake_run(folder, status="running" if damage == "status running" else "complete")
    if damage == "no run.json":
        (folder / "run.json").unlink()
    if damage == "no model":
        (folder / "model.keras").unlink()
        (folder / "model.tflite").unlink()
    with pytest.raises(RunError, match="not a complete clothclf run"):
        load_run(folder)


def test_zip_run_bundles_the_model_files_in_a_folder_that_loads_as_a_run(tmp_path):
    data = zip_run(fake_run(tmp_path / "runs" / "r1"))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = sorted(archive.namelist())
        archive.extractall(tmp_path / "unzipped")
    assert names == [
        f"r1/{name}"
        for name in (
            "class_names.json",
            "config.json",
            "history.csv",
            "metrics_validation.json",
            "model.keras",
            "model.tflite",
            "run.json",
        )
    ]
    unzipped = load_run(tmp_path / "unzipped" / "r1")
    assert (unzipped.path / "model.keras").read_bytes() == b"keras model bytes"
    assert read_json(unzipped.path / "run.json")["status"] == "complete"


def test_zip_run_refuses_an_incomplete_run(tmp_path):
    with pytest.raises(RunError):
        zip_run(fake_run(tmp_path / f"{PARTIAL_PREFIX}r", status="running"))
