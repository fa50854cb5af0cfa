"""Timing and process measurements every benchmark uses: interleaved wall-clock timings, their
percentiles, CPU seconds, peak memory, fresh Python processes, and what the machine is."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: The folder that holds the ``clothclf`` package: fresh processes get it on their ``PYTHONPATH``.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def timings_ms(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 5) -> dict[str, np.ndarray]:
    """Wall-clock milliseconds of ``repeats`` calls of each function, after ``warmup`` untimed ones.

    The functions take turns, so whatever else runs on the machine slows them all alike.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: np.empty(repeats) for name in fns}
    for i in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name][i] = (time.perf_counter() - start) * 1e3
    return times


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def peak_rss_mb() -> float:
    """Peak resident memory of this process (``ru_maxrss`` is KB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def images_per_s(fns: dict[str, Callable[[], object]], images: int) -> dict[str, float]:
    """Images per second of calls that each classify ``images`` images (best of 3 turns)."""
    return {name: images / t.min() * 1e3 for name, t in timings_ms(fns, 3, warmup=1).items()}


def stats(times: np.ndarray) -> dict[str, float]:
    """p50, p95 and the minimum of ``times``."""
    return {"p50": float(np.median(times)), "p95": float(np.percentile(times, 95)), "min": float(times.min())}


def cpu_seconds(call: Callable[[], object]) -> float:
    """CPU seconds the whole process spends in ``call`` (every thread)."""
    start = time.process_time()
    call()
    return time.process_time() - start


def run_script(script: str, *args: str) -> dict:
    """Run ``script`` in a fresh Python process; its last stdout line as JSON, plus its wall time."""
    started = time.perf_counter()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(PACKAGE_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"a benchmark subprocess failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - started
    return result


def inotify_watches(pid: int) -> int:
    """How many inotify watches process ``pid`` holds (``/proc/<pid>/fdinfo``, Linux only)."""
    count = 0
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        with contextlib.suppress(OSError):
            count += sum(line.startswith("inotify wd:") for line in info.read_text().splitlines())
    return count


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB, to 0.1 MB (``VmRSS`` in ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for process {pid}")


def package_version(distribution: str) -> str:
    """The installed version of ``distribution``, or ``?``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "?"
