"""Serving latency of several model folders (and backends) side by side, in one process, taking turns.

Each entry is a model folder with a backend (``auto`` serves what the folder serves by default); every
entry classifies the same photo, warm, one call at a time, and the calls of all entries alternate so
whatever else the machine does slows them alike. The ratios are to the first entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clothclf.benchmarks.timing import cpu_name, timings_ms
from clothclf.serving.classifier import load_classifier


@dataclass(frozen=True)
class ServedModel:
    """A model folder and the backend to serve it with (``auto``: the folder's own default)."""

    model_dir: Path
    backend: str = "auto"

    @property
    def label(self) -> str:
        return f"{self.model_dir.name} ({self.backend})"


def compare_latency(models: list[ServedModel], photo: bytes, repeats: int = 100) -> dict:
    """Median and 90th-percentile ms of a warm single-photo ``predict`` per model, the resolved backend,
    the backbone's input size, and each median's ratio to the first model's."""
    classifiers = [load_classifier(m.model_dir, backend=m.backend) for m in models]
    calls = {m.label: (lambda c=c: c.predict(photo)) for m, c in zip(models, classifiers)}
    times = timings_ms(calls, repeats)
    first = float(np.median(times[models[0].label]))
    rows = []
    for model, classifier in zip(models, classifiers):
        ms = times[model.label]
        rows.append(
            {
                "model": str(model.model_dir),
                "backend": classifier.backend,
                "image_size": classifier.image_size,
                "p50_ms": round(float(np.median(ms)), 2),
                "p90_ms": round(float(np.percentile(ms, 90)), 2),
                "ratio": round(float(np.median(ms)) / first, 2),
            }
        )
    return {"cpu": cpu_name(), "repeats": repeats, "models": rows}


def markdown(result: dict) -> str:
    """The comparison as a markdown table."""
    lines = [
        f"{result['cpu']}, {result['repeats']} warm single-photo calls each, taking turns",
        "",
        "| model | backend | input | p50 ms | p90 ms | p50 ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in result["models"]:
        lines.append(
            f"| {row['model']} | {row['backend']} | {row['image_size']} | {row['p50_ms']} | "
            f"{row['p90_ms']} | {row['ratio']} |"
        )
    return "\n".join(lines)
