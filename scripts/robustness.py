"""Accuracy of one or more models on a dataset split under common photo corruptions.

    python scripts/robustness.py --data ../shared/data/clothing-dataset-small \
        --model models/default --model models/mobilenet_v2_224_v1          # markdown table
    python scripts/robustness.py --data DATA --model DIR --json             # machine-readable

Corruptions (see src/clothclf/evaluation/robustness.py): Gaussian blur (radius 1% of the shorter side), Gaussian
noise (sd 25/255), JPEG quality 20, brightness x1.5 and x0.5, contrast x0.5 and x1.5, a 90-degree
rotation and a central crop to 60% of each side, each applied to the full-size photo before the
model decodes it. Served as in production (LiteRT, the run's own temperature; answers unaffected).
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
from clothclf.evaluation.robustness import CORRUPTIONS, robustness_accuracies  # noqa: E402
from clothclf.serving.classifier import load_classifier  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset root")
    parser.add_argument("--model", type=Path, action="append", required=True, help="model folder (repeat)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    split = create_dataset(args.data, 42, 0.1, 0.1).split(args.split)
    labels = np.asarray(split.labels)
    table = {str(m): robustness_accuracies(load_classifier(m), split.files, labels) for m in args.model}
    if args.json:
        print(json.dumps({"split": args.split, "n_images": len(labels), "accuracy": table}))
        return 0
    names = list(table)
    print(f"Accuracy on the {args.split} split ({len(labels)} photos)\n")
    print("| corruption | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for corruption in ("clean", *CORRUPTIONS):
        print(f"| {corruption} | " + " | ".join(f"{table[n][corruption]:.3f}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
