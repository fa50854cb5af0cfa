"""Run processes under a real memory cap: a fresh cgroup (v1 ``/sys/fs/cgroup/memory`` or v2), like a
Community Cloud container. Children inherit the cap; the kernel's OOM killer acts at the limit.

    with MemoryCgroup.create(700) as group:          # pytest.skip()s with the reason where impossible
        process = subprocess.Popen(cmd, preexec_fn=group.enter)
        ...
        group.peak_mb(), group.oom_kills()
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CGROUP_ROOT = Path("/sys/fs/cgroup")
MB = 1024 * 1024


@dataclass(frozen=True)
class MemoryCgroup:
    """One memory cgroup made for a test; ``version`` is 1 or 2."""

    folder: Path
    version: int

    @classmethod
    @contextlib.contextmanager
    def create(cls, limit_mb: int) -> Iterator[MemoryCgroup]:
        """A new group capped at ``limit_mb`` (no swap), removed afterwards with whatever still runs in it."""
        group = cls._make(f"clothclf-test-{os.getpid()}-{secrets.token_hex(3)}")
        try:
            group._write("memory.limit_in_bytes" if group.version == 1 else "memory.max", limit_mb * MB)
            for name in ("memory.memsw.limit_in_bytes", "memory.swap.max"):
                with contextlib.suppress(OSError):
                    group._write(name, limit_mb * MB if name.endswith("in_bytes") else 0)
            yield group
        finally:
            group._remove()

    @classmethod
    def _make(cls, name: str) -> MemoryCgroup:
        candidates = [(CGROUP_ROOT / "memory", 1), (CGROUP_ROOT, 2)]
        reasons = []
        for base, version in candidates:
            marker = "memory.limit_in_bytes" if version == 1 else "cgroup.subtree_control"
            if not (base / marker).is_file() or (version == 2 and "memory" not in _read(base / marker)):
                reasons.append(f"no cgroup v{version} memory controller at {base}")
                continue
            try:
                (base / name).mkdir()
            except OSError as exc:
                reasons.append(f"cannot create a cgroup in {base} ({exc.strerror})")
                continue
            return cls(base / name, version)
        pytest.skip("needs a writable memory cgroup (root on Linux): " + "; ".join(reasons))

    def enter(self) -> None:
        """Move the calling process into the group (use as ``preexec_fn`` so only the child is capped)."""
        (self.folder / "cgroup.procs").write_text(str(os.getpid()))

    def peak_mb(self) -> float:
        """The group's peak memory use (RSS and page cache) in MB."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        text = _read(self.folder / name)
        return int(text) / MB if text.isdigit() else 0.0

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer has killed in the group."""
        text = _read(self.folder / ("memory.oom_control" if self.version == 1 else "memory.events"))
        counts = dict(line.split() for line in text.splitlines() if len(line.split()) == 2)
        return int(counts.get("oom_kill", 0))

    def pids(self) -> list[int]:
        return [int(pid) for pid in _read(self.folder / "cgroup.procs").split()]

    def _write(self, name: str, value: int) -> None:
        (self.folder / name).write_text(str(value))

    def _remove(self) -> None:
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        with contextlib.suppress(OSError):
            self.folder.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
