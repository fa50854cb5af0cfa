"""Plant errors in a copy of a dataset and measure how many the data-issue finder reports.

Copies DATA to OUT, moves N training photos into another class's folder (flipped labels), and copies
C training photos into the test split re-encoded as JPEG (quality 75) and resized (a side times 0.8,
every third one also cropped by CROP (default 2%) off each edge), then runs ``clothclf data issues`` on the copy and
prints the recall: flips among the first 5N label issues, copies in a duplicate group with their source.

    python scripts/plant_errors.py --data DATA --out /tmp/planted [--flips 30] [--copies 20] [--crop 0.02] [--model RUN]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

from PIL import Image

from clothclf.config import Paths
from clothclf.data.datasets import create_dataset
from clothclf.evaluation.data_issues import dataset_issues


def plant(
    data: Path, out: Path, flips: int, copies: int, seed: int, crop: float = 0.02
) -> tuple[set[str], dict[str, str]]:
    """Copy ``data`` to ``out`` and plant the errors; (flipped files, {test copy: its training source})."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(data, out)
    dataset = create_dataset(out)
    rng = random.Random(seed)
    chosen = rng.sample(range(len(dataset.train)), flips + copies)
    flipped = set()
    for i in chosen[:flips]:
        path = dataset.train.files[i]
        other = rng.choice([c for c in dataset.class_names if c != path.parent.name])
        target = path.parent.parent / other / path.name
        path.rename(target)
        flipped.add(target.relative_to(out).as_posix())
    copied = {}
    for number, i in enumerate(chosen[flips:]):
        source = dataset.train.files[i]
        with Image.open(source) as image:
            photo = image.convert("RGB")
        if number % 3 == 0:
            w, h = photo.size
            dx, dy = int(w * crop), int(h * crop)
            photo = photo.crop((dx, dy, w - dx, h - dy))
        photo = photo.resize((int(photo.width * 0.8), int(photo.height * 0.8)))
        target = out / "test" / source.parent.name / f"planted-{source.stem}.jpg"
        photo.save(target, quality=75)
        copied[target.relative_to(out).as_posix()] = source.relative_to(out).as_posix()
    return flipped, copied


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Paths.from_env().default_dataset_dir)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--flips", type=int, default=30)
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--crop", type=float, default=0.02, help="share cut off each edge of every third copy"
    )
    args = parser.parse_args()
    flipped, copied = plant(args.data, args.out, args.flips, args.copies, args.seed, args.crop)
    started = time.monotonic()
    issues, _ = dataset_issues(create_dataset(args.out), args.model)
    top = {i.file for i in issues.label_issues[: 5 * len(flipped)]}
    together = [c for c, s in copied.items() if any({c, s} <= set(d.files) for d in issues.duplicates)]
    result = {
        "flips": len(flipped),
        "flips_in_top_5n": len(flipped & top),
        "flip_recall": round(len(flipped & top) / max(len(flipped), 1), 3),
        "flips_anywhere": len(flipped & {i.file for i in issues.label_issues}),
        "copies": len(copied),
        "copies_found": len(together),
        "copy_recall": round(len(together) / max(len(copied), 1), 3),
        "label_issues": len(issues.label_issues),
        "duplicate_groups": len(issues.duplicates),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
