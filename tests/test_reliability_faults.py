"""Faults during fine-tuning, seen from the app: nothing is lost and no broken run passes for a model.

``test_jobs.py`` covers the job machinery itself (kill, cancel, a failed export); here the same
faults are checked end to end: the default model's bytes, the model a session picked, the Models
and Fine-tune pages, and a second request while a run is going. The training children are real
processes (tens of seconds each on two cores: importing TensorFlow dominates).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import long_config
from PIL import Image
from streamlit.testing.v1 import AppTest

from clothclf.app import jobs
from clothclf.app.jobs import Job, JobStatus, current_job, start_job
from clothclf.app.models_list import list_models
from clothclf.config import Paths
from clothclf.runs import PARTIAL_PREFIX, list_runs, read_json, write_json

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
TIMEOUT = 300  # seconds for a training child on a loaded two-core machine


@dataclasses.dataclass(frozen=True)
class Models:
    default: Path
    previous: Path


@pytest.fixture
def models(tiny_run, tmp_path, monkeypatch) -> Models:
    """A real default model (a copy of the tiny run) and an earlier complete run named ``previous``."""
    default = Path(shutil.copytree(tiny_run, tmp_path / "default-model"))
    previous = Path(shutil.copytree(tiny_run, Paths.from_env().runs_dir / "20200101-000000-previous"))
    write_json(previous / "run.json", {**read_json(previous / "run.json"), "name": "previous"})
    monkeypatch.setenv("CLOTHCLF_MODEL_DIR", str(default))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # no cached weights: the same form everywhere
    return Models(default, previous)


def fingerprint(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=120).run()


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def use_model(at: AppTest, path: Path) -> None:
    """Pick ``path`` on the Models page, as a visitor does."""
    at.switch_page("pages/models.py").run()
    at.selectbox(key="models_choice").set_value(str(path)).run()
    [use] = [b for b in at.button if b.label == "Use this model"]
    use.click().run()
    assert at.session_state["model_dir"] == str(path)


def models_page_rows(at: AppTest) -> list[str]:
    at.switch_page("pages/models.py").run()
    assert not at.exception, texts(at.exception)
    return list(at.dataframe[0].value["model"])


def classify_a_photo(at: AppTest) -> str:
    """Upload a photo on the Classify page; return the confidence shown."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), (20, 40, 220), np.uint8)).save(buffer, format="PNG")
    at.switch_page("pages/classify.py").run()
    at.file_uploader[0].set_value(("photo.png", buffer.getvalue(), "image/png")).run()
    assert not at.exception and not at.error, texts(at.exception) + texts(at.error)
    return at.metric[0].value


def assert_models_intact(models: Models, before: dict[Path, dict[str, str]], paths: Paths) -> None:
    """The default model and the earlier run are byte for byte unchanged and are the only models."""
    assert {folder: fingerprint(folder) for folder in before} == before
    assert [run.path for run in list_runs(paths.runs_dir)] == [models.previous]
    assert [entry.path for entry in list_models(paths)] == [models.default, models.previous]


def wait_for_training(job: Job, timeout: float = TIMEOUT) -> JobStatus:
    """Poll until the job is in its second training epoch or later."""
    deadline = time.monotonic() + timeout
    while not ((status := job.status()).phase == "head" and status.epoch >= 2):
        assert status.active, f"the job ended before training: {status}"
        assert time.monotonic() < deadline, f"timed out; last status: {status}"
        time.sleep(0.1)
    return status


@pytest.fixture
def started_jobs() -> Iterator[list[Job]]:
    """Jobs a test started; a child still running at the end is killed, so a failed test leaves none."""
    jobs: list[Job] = []
    yield jobs
    for job in jobs:
        pid = job.pid()
        if pid is not None and job.status().active:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_job_killed_mid_training_loses_nothing_and_never_shows_as_a_model(
    models, synthetic_dataset, started_jobs, monkeypatch
):
    monkeypatch.setenv("CLOTHCLF_DATA_DIR", str(synthetic_dataset))  # the page's default dataset
    paths = Paths.from_env()
    before = {folder: fingerprint(folder) for folder in (models.default, models.previous)}
    visitor = app()
    use_model(visitor, models.previous)
    answer_before = classify_a_photo(visitor)
    # Two more visitors open the Fine-tune page while nothing runs: their Start buttons are enabled.
    stale, racing = (app().switch_page("pages/fine_tune.py").run() for _ in range(2))
    assert not stale.button(key="ft_start").disabled and not racing.button(key="ft_start").disabled

    job = start_job(long_config(synthetic_dataset), paths)  # what the page's Start button calls
    started_jobs.append(job)
    wait_for_training(job)

    # A second request from a page drawn before the job began: Streamlit drops clicks on a button that
    # is now disabled, and the page says why.
    stale.button(key="ft_start").click().run()
    assert not stale.exception and not stale.error
    assert "A run is in progress" in texts(stale.caption) and stale.button(key="ft_start").disabled
    # The same request racing the first one (its rerun looked at the jobs just before the other one
    # started) gets through the page and is refused by start_job under its lock.
    real_current_job, looks = jobs.current_job, []

    def job_appears_after_the_page_looked(p: Paths) -> Job | None:
        looks.append(p)
        return None if len(looks) == 1 else real_current_job(p)

    monkeypatch.setattr(jobs, "current_job", job_appears_after_the_page_looked)
    racing.button(key="ft_start").click().run()
    monkeypatch.setattr(jobs, "current_job", real_current_job)
    assert len(looks) >= 3, (  # the page also looks for the running job's dataset folder
        "the page looked once, start_job looked under its lock, then the page read the job it was refused for"
    )
    assert not racing.exception
    assert "a training run is already in progress" in texts(racing.error)
    assert current_job(paths) == job

    os.kill(job.pid(), signal.SIGKILL)
    status = job.wait(60)
    assert status.state == "failed" and "SIGKILL" in status.error

    visitor.switch_page("pages/fine_tune.py").run()
    assert not visitor.exception
    assert "Training failed" in texts(visitor.error) and "SIGKILL" in texts(visitor.error)
    assert "most likely ran out of memory" in texts(visitor.error) and "head only" in texts(visitor.error)
    assert not visitor.button(key="ft_start").disabled, "a dead job does not block the next one"
    assert not [b for b in visitor.button if b.key in ("ft_use", "ft_cancel")]
    assert models_page_rows(visitor) == ["tiny (default)", "previous"]
    assert visitor.session_state["model_dir"] == str(models.previous)
    assert "The Classify page uses **previous**." in texts(visitor.caption)
    assert classify_a_photo(visitor) == answer_before
    assert_models_intact(models, before, paths)
    partial = job.run_dir.parent / f"{PARTIAL_PREFIX}{job.run_dir.name}"
    assert partial.is_dir(), "the half-written run stays hidden until the next start removes it"


def test_a_full_disk_at_the_last_write_fails_the_run_cleanly(
    models, synthetic_dataset, started_jobs, tmp_path, monkeypatch
):
    # The child is another process: a sitecustomize module on its PYTHONPATH makes writing run.json
    # (the last file of a run, after the models and metrics) fail as on a full disk.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import errno\n"
        "from pathlib import Path\n\n"
        "import clothclf.runs\n\n"
        "_write_json = clothclf.runs.write_json\n\n\n"
        "def write_json(path, data):\n"
        "    if Path(path).name == 'run.json':\n"
        "        raise OSError(errno.ENOSPC, 'No space left on device', str(path))\n"
        "    _write_json(path, data)\n\n\n"
        "clothclf.runs.write_json = write_json\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(hooks))
    monkeypatch.setenv("CLOTHCLF_DATA_DIR", str(synthetic_dataset))
    paths = Paths.from_env()
    before = {folder: fingerprint(folder) for folder in (models.default, models.previous)}

    at = app().switch_page("pages/fine_tune.py").run()
    at.number_input(key="ft_image_size").set_value(32).run()
    at.number_input(key="ft_epochs").set_value(1)
    at.selectbox(key="ft_batch").set_value(8)
    at.radio(key="ft_head_only").set_value(True)
    at.toggle(key="ft_augment").set_value(False)
    at.button(key="ft_start").click().run()
    assert not at.exception and not at.error, texts(at.error)
    job = current_job(paths)
    started_jobs.append(job)
    assert job.wait(TIMEOUT).state == "failed"
    at.run()
    assert not at.exception and not at.success
    message = texts(at.error)
    assert "Training failed: could not write the run" in message and "No space left on device" in message
    assert models_page_rows(at) == ["tiny (default)", "previous"]
    assert_models_intact(models, before, paths)
    assert not list(paths.runs_dir.glob(f"{PARTIAL_PREFIX}*")), "the failed run's files were removed"


@pytest.fixture
def read_only(models, tmp_path) -> Iterator[Path]:
    """The runs folder (holding the earlier run), made read-only for the test.

    Skipped where permissions do not bind (root with CAP_DAC_OVERRIDE); to run it as root anyway:
    ``setpriv --bounding-set -dac_override,-dac_read_search python -m pytest ...``."""
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o555)
    try:
        (probe / "file").touch()
    except PermissionError:
        pass
    else:
        pytest.skip("this process can write into read-only folders")
    runs_dir = models.previous.parent
    runs_dir.chmod(0o555)
    yield runs_dir
    runs_dir.chmod(0o755)


@pytest.mark.parametrize(
    "case",
    [
        "file in the way",
        "read-only",
    ],
)
def test_an_unusable_runs_folder_is_a_message_not_a_crash(
    case, models, synthetic_dataset, tmp_path, monkeypatch, request
):
    if case == "read-only":
        request.getfixturevalue("read_only")
        listed = ["tiny (default)", "previous"]
    else:
        blocked = tmp_path / "runs-is-a-file"
        blocked.write_text("not a folder")
        monkeypatch.setenv("CLOTHCLF_RUNS_DIR", str(blocked))
        listed = ["tiny (default)"]
    monkeypatch.setenv("CLOTHCLF_DATA_DIR", str(synthetic_dataset))
    before = {folder: fingerprint(folder) for folder in (models.default, models.previous)}
    at = app().switch_page("pages/fine_tune.py").run()
    at.number_input(key="ft_image_size").set_value(32).run()
    at.button(key="ft_start").click().run()
    assert not at.exception
    assert "could not start a training job" in texts(at.error)
    assert current_job(Paths.from_env()) is None
    assert models_page_rows(at) == listed
    assert {folder: fingerprint(folder) for folder in before} == before


def test_broken_run_folders_never_show_as_models(models, monkeypatch):
    runs_dir = models.previous.parent
    summary = read_json(models.previous / "run.json")
    shutil.copytree(models.previous, runs_dir / f"{PARTIAL_PREFIX}20200102-000000-half")
    for name, change in {
        "20200103-000000-running": lambda f: write_json(f / "run.json", {**summary, "status": "running"}),
        "20200104-000000-garbled": lambda f: (f / "run.json").write_text('{"status": "comp'),
        "20200105-000000-no-model": lambda f: [
            (f / m).unlink(missing_ok=True) for m in ("model.keras", "model.tflite", "head.npz")
        ],
        "20200106-000000-no-classes": lambda f: (f / "class_names.json").unlink(),
        "20200107-000000-no-summary": lambda f: (f / "run.json").unlink(),
    }.items():
        change(Path(shutil.copytree(models.previous, runs_dir / name)))
    at = app()
    assert models_page_rows(at) == ["tiny (default)", "previous"]
    assert [entry.name for entry in list_models(Paths.from_env())] == ["tiny", "previous"]
