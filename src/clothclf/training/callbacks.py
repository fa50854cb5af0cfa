"""Training callbacks, one behaviour each: progress reporting with cooperative stop, and history."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import keras


@dataclass(frozen=True)
class ProgressEvent:
    """A snapshot of a running training job, handed to a progress hook after every batch and epoch, and
    as the steps around them go (features, evaluating, saving, trust).

    ``fraction`` is the share of all planned epochs done (0..1); ``history`` holds every finished epoch.
    ``batch`` of ``batches`` counts what ``unit`` names: batches in a fit phase, photos or files in a step.
    ``left`` is the step's own estimate of its seconds left, for a step with nothing to count (a LiteRT
    conversion, estimated from the model's size): None when it has none, or once it has overrun it.
    """

    phase: str
    epoch: int
    epochs: int
    batch: int
    batches: int
    fraction: float
    elapsed: float
    metrics: dict[str, float] = field(default_factory=dict)
    history: tuple[dict[str, float | str], ...] = ()
    unit: str = "batches"
    left: float | None = None


ProgressHook = Callable[[ProgressEvent], None]


class StepReporter:
    """Reports the steps around the fit phases (features, evaluating, saving, conversions, trust) to a
    progress hook; ``context()`` gives the run's (fraction done, epoch history) when there is a run."""

    def __init__(
        self,
        hook: ProgressHook | None,
        started: float | None = None,
        context: Callable[[], tuple[float, tuple[dict, ...]]] = lambda: (0.0, ()),
    ):
        self.hook, self.context = hook, context
        self.started = time.monotonic() if started is None else started

    def announce(
        self, phase: str, done: int = 0, total: int = 0, unit: str = "", left: float | None = None
    ) -> None:
        """Report ``phase`` with ``done`` of ``total`` ``unit`` (photos, files) when it counts something,
        or the seconds ``left`` it expects when it cannot count (a conversion)."""
        if self.hook is not None:
            fraction, history = self.context()
            elapsed = time.monotonic() - self.started
            self.hook(ProgressEvent(phase, 0, 0, done, total, fraction, elapsed, {}, history, unit, left))

    def counting(self, phase: str, unit: str) -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callback that announces ``phase`` counting ``unit``."""
        return lambda done, total: self.announce(phase, done, total, unit)

    def timed(self, phase: str) -> Callable[[float, float | None], None]:
        """A ``progress(seconds, left)`` callback (:func:`clothclf.serving.export.timed_step`) that
        announces ``phase`` with the seconds it expects are left."""
        return lambda seconds, left: self.announce(phase, left=left)


def current_lr(model: keras.Model) -> float:
    """The optimizer's learning rate now (works for constant rates and schedules)."""
    optimizer = model.optimizer
    rate = optimizer.learning_rate
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        rate = rate(optimizer.iterations)
    return float(keras.ops.convert_to_numpy(rate))


class HistoryRecorder(keras.callbacks.Callback):
    """Appends one row per epoch (phase, epoch, loss, accuracy, val_loss, val_accuracy, lr) to ``rows``."""

    def __init__(self, rows: list[dict], phase: str):
        super().__init__()
        self.rows = rows
        self.phase = phase

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        row: dict[str, float | str] = {"phase": self.phase, "epoch": len(self.rows) + 1}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in logs:
                row[key] = float(logs[key])
        row["lr"] = current_lr(self.model)
        self.rows.append(row)


class ProgressCallback(keras.callbacks.Callback):
    """Calls ``hook`` after every batch and epoch, and stops training after the current batch
    once ``stop`` is set (``model.stop_training`` is checked by Keras after each batch)."""

    def __init__(
        self,
        hook: ProgressHook | None,
        stop: threading.Event | None,
        *,
        phase: str,
        history: list[dict],
        epochs_before: int,
        total_epochs: int,
        started: float,
    ):
        super().__init__()
        self.hook = hook
        self.stop = stop
        self.phase = phase
        self.history = history
        self.epochs_before = epochs_before
        self.total_epochs = max(total_epochs, 1)
        self.started = started
        self.epoch = 0
        self.epochs = 0
        self.batches = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.epochs = self.params.get("epochs", 0)
        self.batches = self.params.get("steps") or 0
        self._emit(0, None)  # the phase's clock starts now: its first batch (with tracing) counts in the pace

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def _emit(self, batch: int, logs: dict | None) -> None:
        if self.hook is None:
            return
        within = (batch / self.batches) if self.batches else 0.0
        done = self.epochs_before + self.epoch + within
        self.hook(
            ProgressEvent(
                phase=self.phase,
                epoch=self.epoch + 1,
                epochs=self.epochs,
                batch=batch,
                batches=self.batches,
                fraction=min(done / self.total_epochs, 1.0),
                elapsed=time.monotonic() - self.started,
                metrics={k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))},
                history=tuple(self.history),
            )
        )

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._emit(batch + 1, logs)
        if self.stop is not None and self.stop.is_set():
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._emit(self.batches, logs)


class StepPrinter:
    """A progress hook for the terminal: the steps around the fit phases (whose epochs Keras draws
    itself), each as ``computing features: 1200/3068 training photos, about 40 s left``, redrawn in
    place on a terminal at most every ``interval`` seconds, or one line a step (and its end) otherwise."""

    def __init__(self, stream: IO[str], fit_phases: frozenset[str], interval: float = 1.0):
        self.stream, self.fit_phases, self.interval = stream, fit_phases, interval
        self._step: tuple[str, str, int] | None = None
        self._started = self._drawn = 0.0
        self._open = False

    def __call__(self, event: ProgressEvent) -> None:
        if event.phase in self.fit_phases:
            return self._end_line()
        step, now = (event.phase, event.unit, event.batches), time.monotonic()
        if step != self._step:
            self._end_line()
            self._step, self._started, self._drawn = step, now, 0.0
        finished = (event.batches and event.batch >= event.batches) or event.left == 0.0
        if not finished and now - self._drawn < self.interval:
            return None
        self._drawn = now
        self._write(step_text(event, now - self._started), finished)
        return None

    def _write(self, text: str, finished: bool) -> None:
        if self.stream.isatty():
            self.stream.write("\r" + text.ljust(79))
            self._open = not finished
            if finished:
                self.stream.write("\n")
        elif finished or not self._open:  # a log: the step's start and its end
            self.stream.write(text + "\n")
            self._open = not finished
        self.stream.flush()

    def _end_line(self) -> None:
        if self._open and self.stream.isatty():
            self.stream.write("\n")
            self.stream.flush()
        self._open = False


def step_text(event: ProgressEvent, seconds: float) -> str:
    """``<phase>: done/total <unit>, about N s left`` (the estimate from the pace so far); a step with
    nothing to count as ``<phase>: N s, about M s left`` while it has its own estimate."""
    text = event.phase.replace("_", " ")
    if not event.batches:
        if event.left is None and seconds < 1:
            return f"{text}…"
        return f"{text}: {seconds:.0f} s" + (f", about {event.left:.0f} s left" if event.left else "")
    text += f": {event.batch}/{event.batches} {event.unit}"
    if 0 < event.batch < event.batches and seconds > 0:
        text += f", about {seconds / event.batch * (event.batches - event.batch):.0f} s left"
    return text
