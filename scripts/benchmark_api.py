"""Benchmark the HTTP API: 8 concurrent clients on loopback vs in-process predict_batch, memory, TensorFlow.

    python scripts/benchmark_api.py                      # the shipped model, the default dataset's test photos
    python scripts/benchmark_api.py --photos 96 --rounds 3 --clients 8 --json
    python scripts/benchmark_api.py --model DIR --images FOLDER

Starts ``clothclf serve`` on a free port of 127.0.0.1 and measures (see :mod:`clothclf.api.benchmark`):
the rate of 8 concurrent clients through the server against one ``predict_batch`` call over the same
photos in this process (alternating rounds), every status answered, the server's peak RSS and whether
TensorFlow's libraries are loaded in it. Targets: ratio >= 0.85, peak RSS <= 350 MB, no TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from clothclf.api.benchmark import benchmark_photos, run_benchmark  # noqa: E402
from clothclf.config import Paths  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    parser.add_argument(
        "--images", type=Path, help="photos to send (default: the default dataset's test split)"
    )
    parser.add_argument("--photos", type=int, default=96, help="photos per round (default 96)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each (default 3)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args()
    images = args.images or Paths.from_env().default_dataset_dir / "test"
    photos = benchmark_photos(images if images.is_dir() else None, args.photos)
    result = run_benchmark(args.model, photos, args.clients, args.rounds)
    print(json.dumps(result.to_dict()) if args.json else "\n".join(result.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
