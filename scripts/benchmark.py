"""Benchmark serving on this machine: latency, throughput, start-up time and memory, LiteRT vs Keras.

    python scripts/benchmark.py                 # the shipped model, models/default
    python scripts/benchmark.py --model DIR     # any run folder with model.tflite (+ model.keras)
    python scripts/benchmark.py --json          # machine-readable

Without a model at ``models/default`` it builds a stand-in of the same architecture (MobileNetV2,
224 px, ImageNet weights from the Keras cache, e.g. ``KERAS_HOME=/work/shared/keras``) in a
temporary folder. The test photo is ``--image``, else the first JPEG of the default dataset's test
split, else a synthesized 400x533 JPEG. Start-up and the Keras baseline are measured in fresh
subprocesses (small scripts run with ``python -c``); this process never imports TensorFlow.
This is a measurement, not a test: numbers depend on the machine and on what else is running.
The measurements live in :mod:`clothclf.benchmarks.serving`, the table in :mod:`clothclf.benchmarks.report`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from clothclf.benchmarks.report import markdown  # noqa: E402
from clothclf.benchmarks.serving import run_benchmark  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="run folder with model.tflite (default: models/default)")
    parser.add_argument("--image", type=Path, help="photo to classify (default: see the module docstring)")
    parser.add_argument("--repeats", type=int, default=200, help="timed single-image calls")
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras baseline")
    parser.add_argument(
        "--catalog-photos", type=int, default=1000, help="dataset photos for the catalog turns (0: skip)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    args = parser.parse_args(argv)
    try:
        result = run_benchmark(
            args.model,
            args.image,
            args.repeats,
            args.catalog_photos,
            keras=not args.no_keras,
            say=lambda text: print(text, file=sys.stderr),
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
