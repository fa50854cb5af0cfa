"""Summarise candidate runs from their saved scores: validation and test accuracy of each, how the two
agree across runs, and what averaging the runs' answers (an ensemble) would score.

    python scripts/candidates.py models/default runs/a runs/b ... [--ensemble]

Reads only what every run folder saved when it was trained (``metrics_*.json``, ``predictions_*.csv``);
nothing is recomputed. ``--ensemble`` adds the validation accuracy of the runs' log-probabilities averaged,
photo by photo (the answers an ensemble of all the listed runs would give); only validation, where
candidates are chosen.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from clothclf.runs import training_evaluation  # noqa: E402

SPLITS = ("validation", "test")


def accuracy(run: Path, split: str) -> float:
    """The accuracy the run saved for ``split``."""
    return float(json.loads(training_evaluation(run, split).metrics.read_text())["accuracy"])


def log_probabilities(run: Path, split: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(files, log-probabilities, true labels) of a run's saved predictions, sorted by file."""
    with open(training_evaluation(run, split).predictions, newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row["file"])
    columns = [name for name in rows[0] if name.startswith("p_")]
    probs = np.array([[float(row[c]) for c in columns] for row in rows])
    labels = [c[2:] for c in columns]
    return (
        [r["file"] for r in rows],
        np.log(np.clip(probs, 1e-12, 1.0)),
        [labels.index(r["true"]) for r in rows],
    )


def ensemble_accuracy(runs: list[Path], split: str) -> float:
    """Accuracy of the runs' log-probabilities averaged photo by photo (same photos in every run)."""
    files, total, truth = log_probabilities(runs[0], split)
    for run in runs[1:]:
        other_files, log_probs, _ = log_probabilities(run, split)
        if other_files != files:
            raise SystemExit(f"{run}: its {split} predictions cover other photos than {runs[0]}'s")
        total = total + log_probs
    return float(np.mean(total.argmax(axis=1) == np.asarray(truth)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders")
    parser.add_argument(
        "--ensemble", action="store_true", help="also score the average of the runs on validation"
    )
    args = parser.parse_args()
    scores = np.array([[accuracy(run, split) for split in SPLITS] for run in args.runs])
    print("| run | validation | test |\n|---|---:|---:|")
    for run, (val, test) in zip(args.runs, scores):
        print(f"| {run} | {val:.3f} | {test:.3f} |")
    print(
        f"\n{len(args.runs)} runs; test accuracy mean {scores[:, 1].mean():.4f}, sd {scores[:, 1].std():.4f}, "
        f"range {scores[:, 1].min():.3f}-{scores[:, 1].max():.3f}"
    )
    if len(args.runs) > 2:
        print(f"correlation of validation and test accuracy across runs: {np.corrcoef(scores.T)[0, 1]:.2f}")
    if args.ensemble:
        print(f"validation accuracy of the average of all: {ensemble_accuracy(args.runs, 'validation'):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
