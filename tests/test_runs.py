"""Run folders: atomic writes, listing that hides partial and broken folders, loading, bundle zips."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from clothclf.errors import RunError
from clothclf.runs import (
    EVALUATIONS,
    PARTIAL_PREFIX,
    atomic_path,
    atomic_run_dir,
    evaluation_files,
    is_model_folder,
    list_runs,
    load_run,
    model_files,
    read_json,
    save_evaluation,
    saved_evaluations,
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


def test_atomic_path_replaces_the_file_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(OSError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".json"
        tmp.write_text("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_model_files_and_is_model_folder(tmp_path):
    run = fake_run(tmp_path / "run")
    files = model_files(run)
    assert files.litert == run / "model.tflite" and files.keras == run / "model.keras"
    assert files.servable and not files.head_only and files.int8 is None
    assert is_model_folder(run)
    (run / "model.tflite").unlink()
    (run / "model.keras").unlink()
    assert not model_files(run).servable and not is_model_folder(run)
    (run / "features.tflite").write_bytes(b"extractor")
    assert not is_model_folder(run)  # an extractor without its head serves nothing
    (run / "head.npz").write_bytes(b"head")
    assert model_files(run).head_only and is_model_folder(run)
    (run / "class_names.json").unlink()
    assert not is_model_folder(run)


def test_a_saved_evaluation_never_touches_what_training_wrote(tmp_path):
    run = fake_run(tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    rows = [{"file": "shop/a/1.png", "true": "a"}]
    saved = save_evaluation(run, "validation", {"accuracy": 1.0}, rows)
    assert saved == run / EVALUATIONS / "validation"
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    loaded = load_run(run)
    assert loaded.metrics("validation") == {"accuracy": 1.0}  # the latest evaluation of that name
    assert loaded.predictions("validation") == [{"file": "shop/a/1.png", "true": "a"}]
    assert [e.name for e in saved_evaluations(run)] == ["validation", "validation"]
    assert evaluation_files(run, "test") is None and loaded.metrics("test") is None


@pytest.mark.parametrize("name", ["../up", ".hidden", "a/b", "", "x" * 65])
def test_an_evaluation_name_must_be_a_plain_file_name(tmp_path, name):
    with pytest.raises(RunError, match="cannot name an evaluation"):
        save_evaluation(tmp_path, name, {}, [])
    assert list(tmp_path.iterdir()) == []


def test_an_evaluation_that_cannot_be_written_is_a_run_error(tmp_path):
    (tmp_path / EVALUATIONS).write_text("a file where the folder would go")
    with pytest.raises(RunError, match="cannot save the evaluation"):
        save_evaluation(tmp_path, "shop", {}, [])


def test_zip_run_bundles_saved_evaluations(tmp_path):
    run = fake_run(tmp_path / "run")
    save_evaluation(run, "shop", {"accuracy": 0.5}, [{"file": "a.png"}])
    names = zipfile.ZipFile(io.BytesIO(zip_run(run))).namelist()
    assert "run/evaluations/shop/metrics.json" in names and "run/metrics_validation.json" in names
