"""Background training jobs: real child processes on the tiny synthetic dataset.

Each test starts ``python -m clothclf.app.worker`` children (tens of seconds each on two cores: importing
TensorFlow dominates) and polls their status files with timeouts, so nothing can hang.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import long_config, tiny_config, zip_bytes

from clothclf.app.jobs import Job, JobStatus, current_job, start_job
from clothclf.app.training_data import check_training_data, extract_uploaded_dataset, uploads_dir
from clothclf.config import Paths, TrainConfig
from clothclf.errors import ClothclfError, DatasetError
from clothclf.runs import PARTIAL_PREFIX, list_runs, read_json, write_json

TIMEOUT = 300  # seconds: generous for a loaded two-core machine; a healthy job needs well under this


def wait_for(job: Job, condition: Callable[[JobStatus], bool], timeout: float = TIMEOUT) -> JobStatus:
    """Poll ``job`` until ``condition(status)``; fail if it ends first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not condition(status := job.status()):
        assert status.active, f"the job ended before the awaited state: {status}"
        assert time.monotonic() < deadline, f"timed out; last status: {status}"
        time.sleep(0.1)
    return status


def training_epochs(status: JobStatus) -> bool:
    return status.phase == "head" and status.epoch >= 2


def visible_folders(runs_dir: Path) -> list[str]:
    return sorted(p.name for p in runs_dir.iterdir() if not p.name.startswith("."))


def fake_previous_run(runs_dir: Path) -> Path:
    """A complete earlier run (placeholder model bytes are enough to be listed)."""
    folder = runs_dir / "20200101-000000-previous"
    folder.mkdir(parents=True)
    (folder / "model.tflite").write_bytes(b"previous model")
    write_json(folder / "class_names.json", ["red", "green", "blue"])
    write_json(folder / "run.json", {"name": folder.name, "status": "complete", "created": "2020-01-01"})
    return folder


@pytest.fixture
def paths(tmp_path) -> Paths:
    """The isolated folders of conftest, with a placeholder default model that must stay untouched."""
    default = tmp_path / "default-model"
    default.mkdir()
    (default / "model.tflite").write_bytes(b"default model")
    return dataclasses.replace(Paths.from_env(), default_model_dir=default)


def test_the_jobs_module_never_imports_tensorflow():
    code = "import sys, clothclf.app.jobs; sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_an_uploaded_zip_of_class_folders_becomes_a_dataset_under_the_runs_folder(synthetic_dataset, paths):
    files = {
        f"photos/{p.parent.name}/{p.name}": p.read_bytes() for p in synthetic_dataset.glob("train/*/*.png")
    }
    folder = extract_uploaded_dataset(io.BytesIO(zip_bytes(files)), paths)
    assert folder.parent == uploads_dir(paths) == paths.runs_dir / ".uploads"
    report = check_training_data(TrainConfig(data_dir=str(folder)), paths)
    assert report.ok and report.class_names == ("blue", "green", "red")
    assert report.root == str((folder / "photos").resolve())


@pytest.mark.parametrize(
    "files", [{"notes/readme.txt": b"no images"}, {"only/one/class.png": b"not even a png"}, {}]
)
def test_an_uploaded_zip_without_a_dataset_is_refused_and_nothing_is_kept(paths, files):
    folder = extract_uploaded_dataset(io.BytesIO(zip_bytes(files)), paths)
    with pytest.raises(DatasetError):
        check_training_data(TrainConfig(data_dir=str(folder)), paths)
    assert not list(uploads_dir(paths).glob("*"))


def test_a_job_trains_in_a_child_process_and_its_run_is_listed(synthetic_dataset, paths):
    assert current_job(paths) is None
    job = start_job(tiny_config(synthetic_dataset), paths)
    assert current_job(paths) == job
    status = job.wait(TIMEOUT)
    assert status.state == "finished", status.error
    assert status.run_dir is not None and status.fraction == 1.0
    assert [run.path for run in list_runs(paths.runs_dir)] == [Path(status.run_dir)]
    assert len(status.history) == 2 and {"loss", "val_accuracy"} <= set(status.history[-1])
    assert 0.0 <= status.metrics["val_accuracy"] <= 1.0
    # The time shown is what the visitor waited: from the click, TensorFlow's start and the saving included.
    waited = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(status.started)).total_seconds()
    assert status.elapsed > float(read_json(Path(status.run_dir) / "run.json")["seconds"])
    assert status.elapsed <= waited + 1


def test_the_wait_counts_from_the_start_while_active_and_is_fixed_once_ended():
    started = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    running = JobStatus("j", "running", elapsed=3.0, started=started.isoformat(timespec="seconds"))
    assert running.waited(started + dt.timedelta(seconds=40)) == 40.0  # no event for 37 s: still counts
    assert running.waited(started + dt.timedelta(seconds=1)) == 3.0
    assert dataclasses.replace(running, state="finished", elapsed=41.5).waited() == 41.5


def test_bad_configs_and_datasets_are_refused_before_anything_starts(synthetic_dataset, paths, tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        start_job(tiny_config(synthetic_dataset, image_size=8), paths)
    with pytest.raises(ValueError, match="unknown backbone"):
        start_job(tiny_config(synthetic_dataset, backbone="vgg"), paths)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError):
        start_job(tiny_config(tmp_path / "empty"), paths)
    assert current_job(paths) is None


def uploaded(dataset: Path, paths: Paths) -> Path:
    """``dataset`` zipped and uploaded as a visitor would: extracted under the runs folder."""
    files = {f"photos/{p.relative_to(dataset).as_posix()}": p.read_bytes() for p in dataset.rglob("*.png")}
    return extract_uploaded_dataset(io.BytesIO(zip_bytes(files)), paths)


def test_one_job_at_a_time_and_cancel_saves_nothing(synthetic_dataset, paths):
    upload = uploaded(synthetic_dataset, paths)
    job = start_job(long_config(upload), paths)
    with pytest.raises(ClothclfError, match="already in progress"):
        start_job(tiny_config(synthetic_dataset), paths)
    watcher = current_job(paths)  # what another visitor's session sees
    assert watcher == job and watcher.status().active
    running = wait_for(job, training_epochs)
    assert running.eta is not None and running.eta > 0 and 0 < running.fraction < 1
    job.cancel()
    status = job.wait(TIMEOUT)
    assert status.state == "cancelled"
    assert 2 <= len(status.history) < 500
    assert list_runs(paths.runs_dir) == []
    assert visible_folders(paths.runs_dir) == []
    assert not list(paths.runs_dir.glob(f"{PARTIAL_PREFIX}*"))
    deadline = time.monotonic() + TIMEOUT  # the parent deletes the upload once the child has exited
    while upload.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not upload.exists() and not list(uploads_dir(paths).iterdir()), "a run's upload goes when it ends"


def test_a_killed_child_reads_as_failed_and_leaves_earlier_models_intact(synthetic_dataset, paths):
    previous = fake_previous_run(paths.runs_dir)
    job = start_job(long_config(synthetic_dataset), paths)
    wait_for(job, training_epochs)
    os.kill(job.pid(), signal.SIGKILL)
    status = job.wait(60)
    assert status.state == "failed"
    assert "SIGKILL" in status.error and "no run was saved" in status.error
    assert [run.path for run in list_runs(paths.runs_dir)] == [previous]
    assert visible_folders(paths.runs_dir) == [previous.name]
    assert (previous / "model.tflite").read_bytes() == b"previous model"
    assert (paths.default_model_dir / "model.tflite").read_bytes() == b"default model"
    partial = job.run_dir.parent / f"{PARTIAL_PREFIX}{job.run_dir.name}"
    assert partial.is_dir()  # hidden, never listed; the next start removes it

    # The dead job no longer holds the lock: a new job may start, and it removes the partial run.
    retry = start_job(tiny_config(synthetic_dataset), paths)
    assert not partial.exists()
    retry.cancel()  # finishing a run is covered above; stop early to keep the test short
    assert retry.wait(TIMEOUT).state == "cancelled"
    assert [run.path for run in list_runs(paths.runs_dir)] == [previous]


def test_a_failed_write_ends_the_job_with_a_clear_message(synthetic_dataset, paths, tmp_path, monkeypatch):
    # The child is another process: a sitecustomize module on its PYTHONPATH makes writing the
    # LiteRT model (or a head-only run's head) fail as on a full disk, after model.keras was written
    # into the hidden partial folder.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import errno\n"
        "import clothclf.serving.export\n\n"
        "def full_disk(model, path):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device', str(path))\n\n"
        "clothclf.serving.export.export_tflite = clothclf.serving.export.export_head = full_disk\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(hooks))
    job = start_job(tiny_config(synthetic_dataset, epochs=1), paths)
    status = job.wait(TIMEOUT)
    assert status.state == "failed"
    assert "could not write the run" in status.error and "No space left on device" in status.error
    assert list_runs(paths.runs_dir) == []
    assert visible_folders(paths.runs_dir) == []
    assert not list(paths.runs_dir.glob(f"{PARTIAL_PREFIX}*"))
