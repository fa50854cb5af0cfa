"""What every ``clothclf`` command shares at the terminal: defaults from the environment, one-line
argument errors, output that survives a closed pipe and any file name, and TensorFlow's native logs
kept out of the way (``--verbose`` shows them).

Nothing here imports TensorFlow or NumPy, so a command's arguments are checked in a fraction of a
second before anything heavy loads.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from typing import NoReturn

from clothclf.config import Paths

#: Lines TensorFlow's C++ libraries write straight to the stderr file descriptor (absl log lines such
#: as ``I0000 00:00:1795310723.842315   30584 port.cc:153] oneDNN custom operations are on…`` or
#: ``E0000 … failed call to cuInit``, absl's pre-initialisation notice and their continuation lines)
#: and LiteRT's note on its CPU delegate.
NATIVE_LOG = re.compile(
    r"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.]+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: "
    r"|INFO: Created TensorFlow Lite XNNPACK delegate)"
)
#: Exit status after the reader of standard output went away (``… | head``): it chose to stop
#: reading, which is not a failure of the command.
CLOSED_PIPE_EXIT = 0


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (``clothclf train: error: …``), no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def fill_from_environment(args: argparse.Namespace, paths: Paths) -> argparse.Namespace:
    """Give every command the same defaults for the options it has and was not given: ``--model``
    the default model (``CLOTHCLF_MODEL_DIR``), ``--data`` the default dataset (``CLOTHCLF_DATA_DIR``),
    ``--dest`` the data folder. A ``--config`` file's own dataset comes before the environment's."""
    defaults = {"model": paths.default_model_dir, "data": paths.default_dataset_dir, "dest": paths.data_dir}
    for name, value in defaults.items():
        if getattr(args, name, value) is None and not (name == "data" and getattr(args, "config", None)):
            setattr(args, name, value)
    return args


def printable_output() -> None:
    """Make stdout and stderr print any text: characters the terminal's encoding lacks (a file name
    with undecodable bytes) appear as backslash escapes instead of raising ``UnicodeEncodeError``."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")


def exit_quietly_on_closed_pipe() -> int:
    """Point stdout at ``/dev/null`` (so the interpreter's final flush cannot fail again) and return
    the exit status for a command whose reader stopped reading (``clothclf predict … | head -1``)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return CLOSED_PIPE_EXIT


@contextlib.contextmanager
def native_logs_filtered(enabled: bool = True) -> Iterator[None]:
    """While the block runs, drop TensorFlow's native log lines from this process's stderr (file
    descriptor 2, where C++ writes them whatever the Python settings) and pass everything else on."""
    if not enabled:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    forwarder = threading.Thread(target=_forward, args=(read_end, original), daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the forwarder reads to the end
        forwarder.join(timeout=5)
        os.close(original)


def _forward(read_end: int, target: int) -> None:
    with os.fdopen(read_end, "rb") as lines:
        for line in lines:
            if not NATIVE_LOG.match(line.decode(errors="replace")):
                os.write(target, line)


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in the right number: ``1 photo``, ``2 photos``, ``0 files``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def duration_text(seconds: float | None) -> str:
    """A run's duration as people read it, the same in ``clothclf runs`` and the app: ``2 min 05 s``,
    ``45 s``; ``—`` when unknown."""
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
