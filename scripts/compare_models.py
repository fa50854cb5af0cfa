"""Paired comparison of two models on the same photos: accuracy with Wilson intervals, exact McNemar test.

    python scripts/compare_models.py --data ../shared/data/clothing-dataset-small \
        --old models/mobilenet_v2_224_v1 --new models/default [--split test] [--json]

Both models classify every photo of the split (served as in production); the photos one model gets
right and the other wrong (the discordant pairs) decide McNemar's exact two-sided p-value.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from clothclf.data.datasets import create_dataset  # noqa: E402
from clothclf.evaluation.comparison import compare_paired, format_p  # noqa: E402
from clothclf.evaluation.evaluate import evaluate_classifier  # noqa: E402
from clothclf.serving.classifier import load_classifier  # noqa: E402


def correctness(model: Path, data: Path, split: str) -> dict[str, bool]:
    """Whether ``model`` classifies each photo of the split correctly, by file."""
    dataset = create_dataset(data, 42, 0.1, 0.1)
    _, rows = evaluate_classifier(load_classifier(model), dataset.split(split), dataset.root)
    return {row["file"]: bool(row["correct"]) for row in rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset root")
    parser.add_argument("--old", type=Path, required=True, help="model folder a")
    parser.add_argument("--new", type=Path, required=True, help="model folder b")
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    old, new = (correctness(m, args.data, args.split) for m in (args.old, args.new))
    if old.keys() != new.keys():
        raise SystemExit("the two models did not read the same photos")
    files = sorted(old)
    result = compare_paired(np.array([old[f] for f in files]), np.array([new[f] for f in files]))
    summary = {
        "split": args.split,
        "n_images": result.n,
        "old": {"model": str(args.old), "correct": result.correct_a, "interval": result.interval("a")},
        "new": {"model": str(args.new), "correct": result.correct_b, "interval": result.interval("b")},
        "only_old_right": result.only_a,
        "only_new_right": result.only_b,
        "mcnemar_exact_p": result.p_value,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{args.split} split, {result.n} photos\n")
    print("| model | correct | accuracy | 95% Wilson interval |")
    print("|---|---:|---:|---|")
    for key, which in (("old", "a"), ("new", "b")):
        low, high = result.interval(which)
        entry = summary[key]
        print(
            f"| {entry['model']} | {entry['correct']} | {result.accuracy(which):.3f} | {low:.3f}-{high:.3f} |"
        )
    print(
        f"\nOnly the old model right: {result.only_a}; only the new one right: {result.only_b}; "
        f"McNemar's exact two-sided p = {format_p(result.p_value)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
