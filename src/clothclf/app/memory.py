"""Memory: how much this container may use (its cgroup limit) and what a training run needs.

Streamlit Community Cloud gives an app between about 690 MB and 2.7 GB, shared by the server, every
visitor and a training run. :func:`memory_limit_mb` reads the limit of the cgroup this process runs
in (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``, the tightest of the group and its parents),
and :func:`training_memory_mb` estimates a run's peak from measured figures (docs/memory.md), so the
app can warn before starting a run that would be killed. No TensorFlow here.
"""

from __future__ import annotations

import os
from pathlib import Path

from clothclf.config import MB, TrainConfig

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Limits at or above this many bytes mean "no limit" (cgroup v1 writes a huge number).
_UNLIMITED = 1 << 60

#: Measured peaks (MB) of ``clothclf train`` runs with MobileNetV2 at 224 px, cold feature cache
#: (scripts/measure_memory.py train; docs/memory.md). A head-only run: 606 MB in a 700 MB cgroup on
#: the default dataset (560 MB anonymous), 650 MB anonymous on 20,000 photos; its features add 5 KB a
#: photo, so this covers datasets up to that size.
HEAD_ONLY_MB = 650
#: A fine-tuning run at 224 px: 1,379 MB anonymous with batch 32, of which the training steps add
#: 22 MB an image of the batch (activations and gradients) and the rest is TensorFlow, the model,
#: the converter and the trust step.
FINE_TUNE_BASE_MB = 680
FINE_TUNE_PER_IMAGE_MB = 22


def _cgroup_dirs(proc_cgroup: str, root: Path) -> list[Path]:
    """The memory cgroup folders of this process and its ancestors, from ``/proc/self/cgroup``."""
    folders = []
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: "0::/path"
            base = root
        elif "memory" in controllers.split(","):
            base = root / "memory"
        else:
            continue
        relative = Path(path.lstrip("/"))
        folders += [base / relative, *(base / parent for parent in relative.parents)]
    return folders


def _read_limit(folder: Path) -> int | None:
    for name in ("memory.max", "memory.limit_in_bytes"):
        try:
            text = (folder / name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < _UNLIMITED:
            return int(text)
    return None


def memory_limit_mb(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """This process's memory limit in MB (its cgroup's, v1 or v2), or None when there is none."""
    try:
        lines = proc_cgroup.read_text()
    except OSError:
        return None
    limits = [limit for folder in _cgroup_dirs(lines, root) if (limit := _read_limit(folder)) is not None]
    return min(limits) / MB if limits else None


def process_rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process (this one by default) in MB, from ``/proc`` (0 where unavailable)."""
    try:
        status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def training_memory_mb(config: TrainConfig) -> float:
    """The estimated peak memory of a training run (MB); it does not grow with the dataset's size."""
    if config.head_only:
        return HEAD_ONLY_MB
    scale = (config.image_size / 224) ** 2
    return FINE_TUNE_BASE_MB + FINE_TUNE_PER_IMAGE_MB * config.batch_size * scale


def memory_warning(config: TrainConfig, limit_mb: float | None, used_mb: float = 0.0) -> str | None:
    """A sentence saying the run will most likely not fit in ``limit_mb`` (with ``used_mb`` taken
    already, by the server), and what to change; None if it fits or there is no limit."""
    if limit_mb is None:
        return None
    need = training_memory_mb(config)
    free = limit_mb - used_mb
    if need <= free:
        return None
    return (
        f"This run needs about {need:,.0f} MB of memory but only about {max(free, 0):,.0f} MB of the "
        f"{limit_mb:,.0f} MB this app may use are free, so it would most likely be stopped. "
        f"{out_of_memory_advice(config.head_only)}"
    )


def out_of_memory_advice(head_only: bool) -> str:
    """What to change when a run does not fit: a lighter run, or (for the lightest, head-only) a
    larger machine, since nothing a visitor can set makes a head-only run smaller."""
    if not head_only:
        return "Try training the head only, smaller images or a smaller batch."
    return (
        "Training the head only is already the lightest run, so this app's server is too small to train "
        f"(it needs about {HEAD_ONLY_MB:,} MB beside the app): run `clothclf train` on a larger machine "
        "and copy the run folder into the app's runs folder."
    )
