"""The child process of a training job: ``python -m clothclf.app.worker <job folder>``.

Started by :func:`clothclf.app.jobs.start_job`; trains with :func:`clothclf.training.loop.train` and keeps
the job's ``status.json`` up to date as training goes (see :mod:`clothclf.app.jobs` for the job folder).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clothclf.allocator import tune_for_server
from clothclf.app.jobs import Job, JobStatus
from clothclf.config import Paths, TrainConfig
from clothclf.runs import write_json
from clothclf.training.phases import DONE, FIT_PHASES, STARTING

if TYPE_CHECKING:
    from clothclf.training.callbacks import ProgressEvent

log = logging.getLogger(__name__)

#: Least seconds between two status writes within one epoch.
STATUS_INTERVAL = 0.5
MAX_ERROR_CHARS = 600


class _Reporter:
    """The child's progress hook: writes status snapshots and turns a cancel request into ``stop``."""

    def __init__(self, job: Job, stop: threading.Event, started: str, deadline: float | None = None):
        self.job = job
        self.stop = stop
        self.started = started
        self.deadline = deadline
        self.timed_out = False
        self.last: JobStatus = JobStatus(job.id, "running", started=started)
        self._written_at = 0.0
        self._step_start: tuple[tuple, float, float] | None = None  # (step, elapsed, progress)

    def __call__(self, event: ProgressEvent) -> None:
        if self.deadline is not None and time.time() > self.deadline:
            self.timed_out = True
            self.stop.set()
        if self.job.cancel_requested:
            self.stop.set()
        same_epoch = (event.phase, event.epoch) == (self.last.phase, self.last.epoch)
        mid_epoch = 0 < event.batch < event.batches
        eta = self._eta(event)
        if same_epoch and mid_epoch and time.monotonic() - self._written_at < STATUS_INTERVAL:
            return
        self.update(
            phase=event.phase,
            epoch=event.epoch,
            epochs=event.epochs,
            batch=event.batch,
            batches=event.batches,
            unit=event.unit,
            fraction=event.fraction,
            elapsed=event.elapsed,
            eta=eta,
            metrics=dict(event.metrics),
            history=tuple(event.history),
        )

    def _eta(self, event: ProgressEvent) -> float | None:
        """Seconds left in the current step at its pace so far (its first event starts the clock): a fit
        phase by the share of its epochs done, a counted step (photos, files) by its count; a step with
        nothing to count (a conversion) gives its own estimate."""
        if event.left is not None:
            return event.left
        fit = event.phase in FIT_PHASES
        if not fit and not event.batches:
            return None
        step = (event.phase,) if fit else (event.phase, event.unit, event.batches)
        done, total = (event.fraction, 1.0) if fit else (event.batch, event.batches)
        if self._step_start is None or self._step_start[0] != step:
            self._step_start = (step, event.elapsed, done)
        _, elapsed0, done0 = self._step_start
        if done <= done0:
            return None
        return (event.elapsed - elapsed0) / (done - done0) * (total - done)

    def update(self, **changes: Any) -> JobStatus:
        self.last = dataclasses.replace(self.last, **changes)
        write_json(self.job.folder / "status.json", self.last.to_dict())
        self._written_at = time.monotonic()
        return self.last


def _describe_error(exc: Exception) -> str:
    """A one-paragraph message: clothclf's own errors as they are, others with their type."""
    text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + " … (see output.log)"


def run_job(job: Job, stop: threading.Event) -> JobStatus:
    """Train what ``job`` requests in this process, keeping its status up to date; return the final one."""
    request = job.request()
    reporter = _Reporter(job, stop, request["started"], request.get("deadline"))
    reporter.update(state="running", phase=STARTING)
    try:
        from clothclf.training.loop import TrainingCancelled, train
        from clothclf.training.missing_weights import weights_failure
    except ImportError as exc:
        return reporter.update(state="failed", error=f"cannot import the training code: {exc}")
    try:
        result = train(
            TrainConfig.from_dict(request["config"]),
            request["run_dir"],
            paths=Paths(**{name: Path(value) for name, value in request["paths"].items()}),
            progress=reporter,
            stop=stop,
        )
    except TrainingCancelled:
        if reporter.timed_out:
            minutes = request["time_limit_minutes"]
            error = f"the run reached its time limit ({minutes:g} min) and was stopped; no run was saved"
            return reporter.update(state="failed", eta=None, error=error)
        return reporter.update(state="cancelled", eta=None)
    except Exception as exc:
        log.exception("training failed")
        config = request["config"]
        missing = weights_failure(exc, config.get("backbone", ""), config.get("image_size", 0))
        return reporter.update(state="failed", eta=None, error=_describe_error(missing or exc))
    return reporter.update(
        state="finished",
        phase=DONE,
        fraction=1.0,
        elapsed=reporter.last.waited(),  # from the click, TensorFlow's start and the saving included
        eta=0.0,
        run_dir=str(result.run_dir),
        metrics={
            "val_accuracy": result.val_accuracy,
            "best_epoch_val_accuracy": result.best_epoch_val_accuracy,
        },
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m clothclf.app.worker JOB_FOLDER``: the child process started by :func:`start_job`.

    SIGTERM and SIGINT cancel the job after the current batch, like a cancel request.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m clothclf.app.worker JOB_FOLDER", file=sys.stderr)
        return 2
    tune_for_server()  # two malloc arenas, as `clothclf train`: a head-only run fits in 700 MB
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    status = run_job(Job(Path(args[0])), stop)
    log.info("job %s %s", status.job_id, status.state)
    return 1 if status.state == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
