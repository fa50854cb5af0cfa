"""Benchmark a short head-only training run: cold feature cache, then warm.

    python scripts/benchmark_training.py [--data DIR] [--epochs 3] [--image-size 224] [--warm-runs 3]

Runs ``clothclf train --head-only`` in fresh processes against an empty feature cache (a temporary
CLOTHCLF_CACHE_DIR): the first run converts the extractor to LiteRT and computes the backbone
features, the next ``--warm-runs`` reuse them. Prints wall time (including Python and TensorFlow start-up) and validation accuracy.
Needs the MobileNetV2 ImageNet weights (KERAS_HOME) and the dataset (--data or CLOTHCLF_DATA_DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(data: str, epochs: int, image_size: int, cache: Path, out: Path) -> dict:
    command = [sys.executable, "-m", "clothclf", "train", "--data", data, "--head-only"]
    command += ["--epochs", str(epochs), "--image-size", str(image_size), "--out", str(out), "--json"]
    env = {**os.environ, "CLOTHCLF_CACHE_DIR": str(cache), "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CLOTHCLF_DATA_DIR"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--warm-runs", type=int, default=3, help="warm-cache runs after the cold one")
    args = parser.parse_args()
    if not args.data:
        parser.error("give --data or set CLOTHCLF_DATA_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        rows = [("cold cache", run_once(args.data, args.epochs, args.image_size, cache, Path(tmp) / "cold"))]
        for i in range(args.warm_runs):
            out = Path(tmp) / f"warm-{i}"
            rows.append(
                (f"warm cache #{i + 1}", run_once(args.data, args.epochs, args.image_size, cache, out))
            )
    print(f"| {args.epochs}-epoch head-only MobileNetV2, {args.image_size} px | wall s | val accuracy |")
    print("|---|---:|---:|")
    for name, row in rows:
        print(f"| {name} | {row['wall_seconds']:.1f} | {row['val_accuracy']:.4f} |")
    warm = sorted(row["wall_seconds"] for _, row in rows[1:])
    print(f"warm median {warm[len(warm) // 2]:.1f} s over {len(warm)} runs")


if __name__ == "__main__":
    main()
