"""A real app server for measurements and browser tests: ``streamlit run streamlit_app.py`` from the
checkout on a free loopback port, with its runs, data and cache in a folder of the caller's
(``scripts/load_test.py``, ``scripts/soak.py``, the browser tests). Only subprocesses: nothing here
imports Streamlit."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: The checkout that holds ``streamlit_app.py`` (benchmarks run from a checkout).
PROJECT_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Server:
    """A running server: its address and process id."""

    url: str
    pid: int


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(
    env: dict[str, str],
    timeout: float = 120.0,
    preexec_fn: Callable[[], None] | None = None,
    file_watcher: str | None = "none",
) -> Iterator[Server]:
    """``streamlit run streamlit_app.py`` on a free loopback port, yielded once ``/_stcore/health``
    answers; stopped (and waited for) on exit. ``preexec_fn`` runs in the server's process before it
    starts (e.g. to enter a memory cgroup); ``file_watcher`` as for :func:`streamlit_servers`."""
    with streamlit_servers([env], timeout, file_watcher, preexec_fn=preexec_fn) as servers:
        yield servers[0]


@contextlib.contextmanager
def streamlit_servers(
    envs: Sequence[dict[str, str]],
    timeout: float = 120.0,
    file_watcher: str | None = "none",
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[list[Server]]:
    """One fresh server per environment, all started at once (their start-ups overlap); stopped on exit.

    ``file_watcher`` overrides ``server.fileWatcherType`` (None: the app's own configuration).
    """
    with contextlib.ExitStack() as stack:
        started = [stack.enter_context(_spawned_server(env, file_watcher, preexec_fn)) for env in envs]
        deadline = time.monotonic() + timeout
        yield [_wait_until_healthy(process, url, log, deadline) for process, url, log in started]


@contextlib.contextmanager
def _spawned_server(
    env: dict[str, str], file_watcher: str | None, preexec_fn: Callable[[], None] | None = None
) -> Iterator[tuple[subprocess.Popen, str, IO[str]]]:
    port = free_port()
    command = [
        sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
        "--server.address", "127.0.0.1",
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        *(("--server.fileWatcherType", file_watcher) if file_watcher else ()),
    ]  # fmt: skip
    log = tempfile.TemporaryFile(mode="w+")
    server = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn
    )
    try:
        yield server, f"http://127.0.0.1:{port}", log
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _wait_until_healthy(server: subprocess.Popen, url: str, log: IO[str], deadline: float) -> Server:
    while not _healthy(url):
        if server.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"streamlit exited with code {server.returncode}:\n{log.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"streamlit did not answer on {url} in time")
        time.sleep(0.5)
    return Server(url, server.pid)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.read() == b"ok"
    except OSError:
        return False


def server_env(model_dir: Path, workdir: Path) -> dict[str, str]:
    """The environment for a server that uses ``model_dir`` and keeps its runs, data and cache in ``workdir``."""
    return {
        **os.environ,
        "CLOTHCLF_MODEL_DIR": str(model_dir),
        "CLOTHCLF_RUNS_DIR": str(workdir / "runs"),
        "CLOTHCLF_DATA_DIR": str(workdir / "data"),
        "CLOTHCLF_CACHE_DIR": str(workdir / "cache"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p),
    }
