"""A training job belongs to the server's runs folder, not to a tab or to the process that started it:
its process is recognised by identity (not only by id), it keeps its own time limit, and the
Fine-tune page lets any session cancel it and never shows a stale result beside a running job.

Most tests stand a plain sleeping process in for the training child (no TensorFlow); one trains.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import tiny_config
from streamlit.testing.v1 import AppTest

from clothclf.app.jobs import KILL_GRACE_SECONDS, Job, JobStatus, ProcessId, current_job
from clothclf.app.training_data import check_training_data
from clothclf.app.worker import run_job
from clothclf.config import Paths
from clothclf.runs import write_json

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")


@pytest.fixture
def sleeper():
    """A live process that is not a training job: it ignores every request and only ends when killed."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    yield process
    process.kill()
    process.wait()


def running_job(paths: Paths, process: ProcessId, *, deadline: float | None = None, state="running") -> Job:
    """A job folder, made current, whose snapshot says ``state`` and whose child is ``process``."""
    job = Job(paths.runs_dir / ".jobs" / "20260101-000000-abcdef")
    job.folder.mkdir(parents=True)
    request = {"config": {}, "paths": {}, "run_dir": str(paths.runs_dir / "run"), "started": "2026-01-01"}
    if deadline is not None:
        request |= {"deadline": deadline, "time_limit_minutes": 1.0}
    write_json(job.folder / "request.json", request)
    write_json(
        job.folder / "status.json", JobStatus(job.id, state, phase="head", epoch=3, epochs=500).to_dict()
    )
    write_json(job.folder / "process.json", dataclasses.asdict(process))
    (job.folder.parent / "current").write_text(job.id)
    return job


def test_the_job_is_its_process_not_whichever_process_has_its_id(sleeper):
    paths = Paths.from_env()
    identity = ProcessId.of(sleeper.pid)
    assert identity.started is not None and identity.alive()
    job = running_job(paths, identity)
    assert job.status().state == "running"
    # Same id, another start time: the job's process ended and the id went to another process.
    write_json(job.folder / "process.json", dataclasses.asdict(dataclasses.replace(identity, started=1)))
    status = job.status()
    assert status.state == "failed" and "no run was saved" in status.error


def test_a_child_that_overruns_its_time_limit_is_killed_by_whoever_reads_its_status(sleeper):
    job = running_job(
        Paths.from_env(), ProcessId.of(sleeper.pid), deadline=time.time() - KILL_GRACE_SECONDS - 1
    )
    status = job.status()
    assert status.state == "failed" and "time limit (1 min)" in status.error
    assert sleeper.wait(timeout=10) == -signal.SIGKILL


def test_the_child_stops_itself_at_its_time_limit(synthetic_dataset, tmp_path):
    paths = Paths.from_env()
    job = Job(tmp_path / "job")
    job.folder.mkdir()
    request = {
        "config": tiny_config(synthetic_dataset, epochs=500, patience=1000).to_dict(),
        "paths": {f.name: str(getattr(paths, f.name)) for f in dataclasses.fields(paths)},
        "run_dir": str(paths.runs_dir / "timed"),
        "started": "2026-01-01T00:00:00+00:00",
        "deadline": time.time() + 2,
        "time_limit_minutes": 2 / 60,
    }
    write_json(job.folder / "request.json", request)
    status = run_job(job, threading.Event())
    assert status.state == "failed" and "time limit" in status.error
    assert 1 <= status.epoch < 500 and not (paths.runs_dir / "timed").exists()


def fine_tune_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    return at.switch_page("pages/fine_tune.py").run()


def test_any_session_can_cancel_the_running_job(sleeper, monkeypatch, tmp_path):
    monkeypatch.setenv("CLOTHCLF_MODEL_DIR", str(tmp_path / "no-model"))
    job = running_job(Paths.from_env(), ProcessId.of(sleeper.pid))  # started by no session of this server
    at = fine_tune_page()
    assert not at.exception
    assert "Training in progress" in [s.value for s in at.subheader]
    at.button(key="ft_cancel").click().run()
    assert job.cancel_requested and job.status().state == "cancelling"


def test_a_refused_start_shows_the_run_in_progress_not_the_previous_failure(
    sleeper, synthetic_dataset, monkeypatch, tmp_path
):
    monkeypatch.setenv("CLOTHCLF_MODEL_DIR", str(tmp_path / "no-model"))
    monkeypatch.setenv("CLOTHCLF_DATA_DIR", str(synthetic_dataset))
    paths = Paths.from_env()
    failed = running_job(paths, ProcessId.of(sleeper.pid), state="failed")
    write_json(failed.folder / "status.json", JobStatus(failed.id, "failed", error="out of memory").to_dict())
    at = fine_tune_page()
    assert "Training failed: out of memory" in [e.value for e in at.error]
    other = Job(paths.runs_dir / ".jobs" / "20260101-000001-fedcba")

    def another_session_starts_first(*args, **kwargs):
        # The other session's run begins while this one's Start is being handled.
        other.folder.mkdir()
        for name in ("request.json", "process.json"):
            (other.folder / name).write_bytes((failed.folder / name).read_bytes())
        write_json(other.folder / "status.json", JobStatus(other.id, "running", phase="head").to_dict())
        (other.folder.parent / "current").write_text(other.id)
        return check_training_data(*args, **kwargs)

    monkeypatch.setattr("clothclf.app.jobs.check_training_data", another_session_starts_first)
    at.button(key="ft_start").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("already in progress" in e for e in errors)
    assert not any(e.startswith("Training failed") for e in errors)
    assert "Training in progress" in [s.value for s in at.subheader]
    assert current_job(paths) == other
