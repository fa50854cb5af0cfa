"""scripts/candidates.py: the summary of candidate runs from their saved scores."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "candidates.py"


def _run_folder(root: Path, name: str, accuracies: tuple[float, float], probs: list[list[float]]) -> Path:
    """A run folder with the two metrics files and validation predictions of photos a.jpg, b.jpg, c.jpg
    (true labels x, y, y), written in reverse file order."""
    run = root / name
    run.mkdir()
    for split, value in zip(("validation", "test"), accuracies):
        (run / f"metrics_{split}.json").write_text(json.dumps({"accuracy": value}))
    rows = [("a.jpg", "x"), ("b.jpg", "y"), ("c.jpg", "y")]
    with open(run / "predictions_validation.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "true", "p_x", "p_y"])
        for (file, true), p in reversed(list(zip(rows, probs))):
            writer.writerow([file, true, *p])
    return run


def test_summary_and_ensemble_of_saved_predictions(tmp_path):
    # Alone each run gets 2 of 3 photos right; averaged log-probabilities get all three.
    first = _run_folder(tmp_path, "one", (0.667, 0.9), [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    second = _run_folder(tmp_path, "two", (0.667, 0.8), [[0.4, 0.6], [0.1, 0.9], [0.2, 0.8]])
    third = _run_folder(tmp_path, "three", (0.5, 0.7), [[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(first), str(second), str(third), "--ensemble"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"| {first} | 0.667 | 0.900 |" in out
    assert "test accuracy mean 0.8000, sd 0.0816, range 0.700-0.900" in out
    assert "correlation of validation and test accuracy across runs: 0.87" in out
    assert "validation accuracy of the average of all: 1.000" in out
