"""Warm single-photo latency of several models in one run, taking turns (ratios to the first).

    python scripts/benchmark_models.py models/mobilenet_v2:litert models/default models/default:litert

Each argument is a model folder, optionally ``:BACKEND`` (default ``auto``, what the folder serves).
The photo is ``--image``, else the first JPEG of the default dataset's test split, else a synthetic one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from clothclf.benchmarks.models import ServedModel, compare_latency, markdown  # noqa: E402
from clothclf.benchmarks.serving import find_image  # noqa: E402


def served_model(text: str) -> ServedModel:
    folder, _, backend = text.partition(":")
    return ServedModel(Path(folder), backend or "auto")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=served_model, help="FOLDER[:BACKEND]")
    parser.add_argument("--image", type=Path, help="photo to classify")
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per model")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    args = parser.parse_args(argv)
    photo, _ = find_image(args.image)
    result = compare_latency(args.models, photo, args.repeats)
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
