"""Background training jobs: one at a time per runs folder, trained in a child process, watched through files.

:func:`start_job` launches ``python -m clothclf.app.worker <job folder>``. The child
(:mod:`clothclf.app.worker`) calls :func:`clothclf.training.loop.train` and writes a status snapshot (atomically) as training goes, so the
caller never imports TensorFlow and a crashed or killed child cannot take it down. A job whose
process is gone without a final status reads as failed; its half-written run stays a hidden
``.partial-*`` folder that :func:`clothclf.runs.list_runs` never shows, and the next start removes it.

Files under ``<runs_dir>/.jobs/``::

    lock                    locked (flock) while a job is being started
    current                 the id of the newest job
    <job id>/request.json   the config, the folders and the run folder to write, from the parent
    <job id>/process.json   the child's identity: process id, start time and boot (see ProcessId)
    <job id>/dataset.json   the dataset report checked before the job started
    <job id>/status.json    the child's latest snapshot (see JobStatus)
    <job id>/cancel         present once a cancel was requested
    <job id>/exit_code      how the child ended, written by the parent that waited for it
    <job id>/timed_out      present once the job was killed for overrunning its time limit
    <job id>/output.log     the child's stdout and stderr

The job belongs to the server's runs folder, not to a browser tab or to the process that started
it: any session (or a server restarted after the first one was killed, which leaves the child
running) reads its status and can cancel it. A process is recognised by its start time as well as
its id, so a later process that reuses the id never reads as the job. Each job has a deadline
(``Limits.max_training_minutes``): the child stops itself at the first batch past it, and whoever
reads the status kills a child still running a grace period later.

Locking uses ``fcntl`` (Linux and macOS).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clothclf.app.memory import memory_limit_mb, out_of_memory_advice
from clothclf.app.training_data import check_training_data, discard_upload
from clothclf.config import Limits, Paths, TrainConfig
from clothclf.data.datasets import create_dataset, dataset_fingerprint
from clothclf.data.overlay import Overlay, check_overlay, overlay_path, read_overlay
from clothclf.data.report import DatasetReport
from clothclf.errors import ClothclfError, RunError
from clothclf.modeling.backbones import get_backbone_spec
from clothclf.runs import PARTIAL_PREFIX, checked_run_name, new_run_name, read_json, write_json, write_text

JOBS_DIR = ".jobs"
#: Seconds a child may run past its deadline (to reach its next batch and stop) before it is killed.
KILL_GRACE_SECONDS = 300.0
ACTIVE_STATES = frozenset({"starting", "running", "cancelling"})
#: Job folders kept for inspection; older ones are deleted when a job starts.
KEEP_JOBS = 10
#: Least seconds between two status writes within one epoch.


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of a job: what the child last wrote, or ``failed`` if its process died first.

    ``state`` is starting, running, cancelling, finished, failed or cancelled. ``phase`` is the
    training step (features, head, fine_tune, train, evaluating, saving, trust); ``epoch`` and
    ``batch`` count within that phase (``batch`` of ``batches`` counts ``unit``: batches, or the photos
    or files of a step); ``fraction`` is the share of all planned epochs done; ``eta`` (seconds)
    extrapolates the current step's pace and is None when unknown.
    """

    job_id: str
    state: str
    phase: str = ""
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 0
    unit: str = ""
    fraction: float = 0.0
    elapsed: float = 0.0
    eta: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: tuple[dict[str, Any], ...] = ()
    run_dir: str | None = None
    error: str | None = None
    started: str = ""

    @property
    def active(self) -> bool:
        """Whether the job may still be training (starting, running or cancelling)."""
        return self.state in ACTIVE_STATES

    def waited(self, now: dt.datetime | None = None) -> float:
        """Seconds since the job started while it is active (what the visitor has waited, loading and
        saving included, whether or not a progress event came); once ended, ``elapsed``."""
        if not self.active or not self.started:
            return self.elapsed
        now = now or dt.datetime.now(dt.UTC)
        return max((now - dt.datetime.fromisoformat(self.started)).total_seconds(), self.elapsed)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``status.json`` holds)."""
        return {**dataclasses.asdict(self), "history": list(self.history)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> JobStatus:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known}
        return cls(**{**kwargs, "history": tuple(kwargs.get("history", ()))})


@dataclass(frozen=True)
class Job:
    """A training job, known by its folder under ``<runs_dir>/.jobs``."""

    folder: Path

    @property
    def id(self) -> str:
        return self.folder.name

    def request(self) -> dict[str, Any]:
        """What was asked: ``config`` (a TrainConfig dict), ``paths``, ``run_dir`` and ``started``."""
        return read_json(self.folder / "request.json")

    @property
    def run_dir(self) -> Path:
        """Where the run is saved once the job finishes."""
        return Path(self.request()["run_dir"])

    def dataset_report(self) -> DatasetReport | None:
        """The dataset report checked when the job started (None for a job started before reports)."""
        try:
            return DatasetReport.from_dict(read_json(self.folder / "dataset.json"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def process(self) -> ProcessId | None:
        """The child process (None before it was started)."""
        try:
            return ProcessId(**read_json(self.folder / "process.json"))
        except (OSError, TypeError, ValueError):
            return None

    def pid(self) -> int | None:
        """The child's process id (None before it was started)."""
        process = self.process()
        return process.pid if process else None

    @property
    def cancel_requested(self) -> bool:
        """Whether :meth:`cancel` was called (by any process)."""
        return (self.folder / "cancel").exists()

    def cancel(self) -> None:
        """Ask the child to stop after its current batch; nothing is saved. Harmless once it ended."""
        (self.folder / "cancel").touch()

    def status(self) -> JobStatus:
        """The latest snapshot; ``failed`` if the child's process is gone without a final state.

        A child still alive a grace period after its deadline is killed here (see the module doc).
        """
        status = self._read_status()
        if not status.active:
            return status
        process = self.process()
        if process is not None and process.alive() and not self._overran(process):
            return dataclasses.replace(status, state="cancelling") if self.cancel_requested else status
        status = self._read_status()  # the child may have written its final state and exited since
        if not status.active:
            return status
        return dataclasses.replace(status, state="failed", eta=None, error=self._death_message())

    def wait(self, timeout: float, interval: float = 0.2) -> JobStatus:
        """Poll until the job has ended and return its final status; ``TimeoutError`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while (status := self.status()).active:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} is still {status.state} after {timeout:g} s")
            time.sleep(interval)
        return status

    def _read_status(self) -> JobStatus:
        try:
            return JobStatus.from_dict(read_json(self.folder / "status.json"))
        except (OSError, ValueError):
            return JobStatus(self.id, "starting")

    def _overran(self, process: ProcessId) -> bool:
        """Kill the child if it runs past its deadline and the grace period; whether it was killed."""
        deadline = self.request().get("deadline")
        if deadline is None or time.time() < deadline + KILL_GRACE_SECONDS:
            return False
        (self.folder / "timed_out").touch()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(process.pid, signal.SIGKILL)
        return True

    def _death_message(self) -> str:
        if (self.folder / "timed_out").exists():
            minutes = self.request().get("time_limit_minutes")
            return f"the run overran its time limit ({minutes:g} min) and was stopped; no run was saved"
        try:
            code = int((self.folder / "exit_code").read_text())
        except (OSError, ValueError):
            how = "stopped"
        else:
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        message = (
            f"the training process {how} before it finished; no run was saved "
            f"(log: {self.folder / 'output.log'})"
        )
        if not how.endswith("SIGKILL"):
            return message
        head_only = bool(self.request().get("config", {}).get("head_only", False))
        return message + out_of_memory_hint(memory_limit_mb(), head_only)


def out_of_memory_hint(limit_mb: float | None, head_only: bool) -> str:
    """What a training child killed by SIGKILL most likely means: the kernel's OOM killer."""
    within = f" of the {limit_mb:,.0f} MB this app may use" if limit_mb else ""
    return f". It most likely ran out of memory{within}. {out_of_memory_advice(head_only)}"


@dataclass(frozen=True)
class ProcessId:
    """A process told apart from any later one with the same number: its id, start time and boot.

    ``started`` is the start time in clock ticks after boot (``/proc/<pid>/stat``, field 22) and
    ``boot`` the kernel's boot id; both None where ``/proc`` does not exist (then only the id is checked).
    """

    pid: int
    started: int | None = None
    boot: str | None = None

    @classmethod
    def of(cls, pid: int) -> ProcessId:
        """The identity of the running process ``pid``."""
        return cls(pid, _start_ticks(pid), _boot_id())

    def alive(self) -> bool:
        """Whether this very process still exists (not another process that reuses its id)."""
        if self.started is None:
            return _pid_alive(self.pid)
        return _boot_id() == self.boot and _start_ticks(self.pid) == self.started


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (its state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot), or None if there is none.

    A zombie still counts: its parent (this server's reaper thread, or init for an orphan) is about
    to collect it and record how it ended, which the status then reports.
    """
    fields = _proc_stat(pid)
    return None if fields is None else int(fields[19])


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (between processes and between threads)."""
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def current_job(paths: Paths) -> Job | None:
    """The newest job under ``paths.runs_dir`` (active or ended), or None if none was started."""
    jobs_dir = paths.runs_dir / JOBS_DIR
    try:
        job_id = (jobs_dir / "current").read_text().strip()
    except OSError:
        return None
    folder = jobs_dir / job_id
    return Job(folder) if job_id and (folder / "request.json").is_file() else None


def active_data_dir(paths: Paths) -> Path | None:
    """The dataset folder of the job training now, if any (an uploaded zip it reads must not be pruned:
    pass it as :func:`~clothclf.app.training_data.training_data_dir`'s ``in_use``)."""
    job = current_job(paths)
    if job is None or not job.status().active:
        return None
    return Path(job.request()["config"]["data_dir"])


def app_overlay(data_dir: str | Path, paths: Paths) -> tuple[Path, Overlay] | None:
    """The file and decisions the Dataset page saved for the dataset in ``data_dir`` when they change a
    label (relabel or exclude), else None: pass the file as :class:`TrainConfig`'s ``overlay``. The page
    files them under the fingerprint of the dataset as it reads it (default split), so this reads every
    photo once. :class:`~clothclf.data.overlay.OverlayError` if the file is corrupt or stale."""
    dataset = create_dataset(data_dir)
    path = overlay_path(paths, dataset_fingerprint(dataset))
    if not path.is_file():
        return None
    overlay = read_overlay(path)
    check_overlay(overlay, dataset.root, dataset.class_names, str(path))
    return (path, overlay) if overlay.changes() else None


def start_job(
    config: TrainConfig, paths: Paths, limits: Limits | None = None, *, name: str | None = None
) -> Job:
    """Check ``config`` and its dataset, then train it in a child process; return the job at once.
    The job stops after ``limits.max_training_minutes``. The run is called ``name`` (a safe folder
    name, not yet taken), or by its start time and backbone.

    Raises :class:`ClothclfError` if a job is already active under ``paths.runs_dir``,
    ``ValueError`` (or :class:`~clothclf.errors.DatasetError`) for a bad config or dataset, and
    :class:`RunError` if the job cannot be started.
    """
    config.validate()
    get_backbone_spec(config.backbone)
    if name is not None:
        checked_run_name(name)
    report = check_training_data(config, paths)
    report.raise_if_refused()
    jobs_dir = paths.runs_dir / JOBS_DIR
    try:
        jobs_dir.mkdir(parents=True, exist_ok=True)
        with _exclusive(jobs_dir / "lock"):
            previous = current_job(paths)
            if previous is not None:
                status = previous.status()
                if status.active:
                    raise ClothclfError(
                        f"a training run is already in progress (job {previous.id}, {status.state}); "
                        "wait for it to finish or cancel it"
                    )
                _remove_partial_run(previous)
            _prune_jobs(jobs_dir, KEEP_JOBS - 1)
            minutes = (limits or Limits()).max_training_minutes
            job = _launch(
                config, paths, jobs_dir, minutes, report, _new_run_dir(paths.runs_dir, config.backbone, name)
            )
            write_text(jobs_dir / "current", job.id)
    except OSError as exc:
        raise RunError(f"could not start a training job in {jobs_dir}: {exc}") from exc
    return job


def _launch(
    config: TrainConfig, paths: Paths, jobs_dir: Path, minutes: float, report: DatasetReport, run_dir: Path
) -> Job:
    job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    job = Job(jobs_dir / job_id)
    job.folder.mkdir()
    write_json(job.folder / "dataset.json", report.to_dict())
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    request = {
        "config": config.to_dict(),
        "paths": {f.name: str(getattr(paths, f.name)) for f in dataclasses.fields(paths)},
        "run_dir": str(run_dir),
        "started": started,
        "deadline": time.time() + 60 * minutes,
        "time_limit_minutes": minutes,
    }
    write_json(job.folder / "request.json", request)
    write_json(job.folder / "status.json", JobStatus(job_id, "starting", started=started).to_dict())
    with (job.folder / "output.log").open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "clothclf.app.worker", str(job.folder)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=child_env(),
        )
    # Read while the child cannot have been reaped yet (the reaper starts below), so it is this child.
    write_json(job.folder / "process.json", dataclasses.asdict(ProcessId.of(process.pid)))
    threading.Thread(
        target=_reap,
        args=(process, job.folder, lambda: discard_upload(config.data_dir, paths)),
        name=f"clothclf-job-{job_id}",
        daemon=True,
    ).start()
    return job


def child_env() -> dict[str, str]:
    """This environment, with clothclf importable and TensorFlow's C++ logging quieter."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _reap(process: subprocess.Popen, folder: Path, cleanup: Callable[[], None]) -> None:
    """Wait for the child, so it never lingers as a zombie (which would look alive), record its end,
    then ``cleanup`` (delete the uploaded dataset it trained on) however it ended."""
    code = process.wait()
    with contextlib.suppress(OSError):
        write_text(folder / "exit_code", str(code))
    cleanup()


def _new_run_dir(runs_dir: Path, backbone: str, name: str | None = None) -> Path:
    """A run folder that does not exist yet (complete or partial): ``name``, refused if it is taken,
    or the start time and backbone (with a suffix if need be)."""
    if name is not None:
        if (runs_dir / name).exists() or (runs_dir / f"{PARTIAL_PREFIX}{name}").exists():
            raise ClothclfError(f"a run named {name!r} is already on this server; choose another name")
        return runs_dir / name
    name = new_run_name(backbone)
    candidate, suffix = runs_dir / name, 2
    while candidate.exists() or (runs_dir / f"{PARTIAL_PREFIX}{candidate.name}").exists():
        candidate, suffix = runs_dir / f"{name}-{suffix}", suffix + 1
    return candidate


def _remove_partial_run(job: Job) -> None:
    """Delete the hidden half-written run a killed job left behind, if any."""
    with contextlib.suppress(OSError, KeyError, ValueError):
        run_dir = job.run_dir
        shutil.rmtree(run_dir.parent / f"{PARTIAL_PREFIX}{run_dir.name}", ignore_errors=True)


def _prune_jobs(jobs_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` job folders (names start with their start time)."""
    folders = sorted(p for p in jobs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders[: max(len(folders) - keep, 0)]:
        shutil.rmtree(folder, ignore_errors=True)
