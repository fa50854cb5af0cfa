"""Benchmark "when to trust an answer" on a model: the four targets of issue 12 and the latency overhead.

    python scripts/benchmark_trust.py --data ../shared/data/clothing-dataset-small --ood ../shared/data/ood-dev

1. no-garment photos (``OOD/far``): share answered ``unknown`` (target >= 98%), with the share of the test
   split's garments answered ``unknown`` (target <= 5%);
2. garment kinds outside the classes (``OOD/near/*``): AUROC of ``ood_score`` against the test split
   (target >= 0.80), and of max-softmax for comparison;
3. test split: accuracy of the ``accept`` answers (target >= 97%) and their coverage (target >= 85%);
4. explanations: each test photo pasted into one quadrant (seeded) of a white canvas twice its size;
   share of photos whose heatmap has most of its mass in that quadrant (target >= 90%);
5. latency: predict with and without the trust score, and with an explanation (median of warm runs).

The OOD photos are for measuring only: nothing here fits anything. The model's thresholds were fitted
on its validation split when it was saved (or by ``clothclf trust``).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from clothclf.data.datasets import IMAGE_EXTENSIONS, scan_class_folder
from clothclf.data.images import load_image
from clothclf.serving.classifier import Classifier, Trust, load_classifier
from clothclf.serving.explain import activation_map


def photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def answers(classifier: Classifier, files: list[Path]):
    return [classifier.predict(f, top_k=1) for f in files]


def auroc(inside: list[float], outside: list[float]) -> float:
    return float(roc_auc_score([0] * len(inside) + [1] * len(outside), [*inside, *outside]))


def quadrant_mass(classifier: Classifier, path: Path, quadrant: int) -> float:
    """Share of the heatmap's mass in the quadrant of a white canvas (twice the photo) holding the photo."""
    photo = Image.fromarray(load_image(path, None))
    width, height = photo.size
    canvas = Image.new("RGB", (2 * width, 2 * height), "white")
    row, column = divmod(quadrant, 2)
    canvas.paste(photo, (column * width, row * height))
    heatmap = classifier.explain(canvas).resized(224, 224)
    total = float(heatmap.sum())
    inside = heatmap[row * 112 : (row + 1) * 112, column * 112 : (column + 1) * 112].sum()
    return float(inside) / total if total > 0 else 0.0


def median_ms(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def latency(classifier: Classifier, path: Path, repeats: int) -> dict[str, float]:
    """Median ms: predict without trust, with trust (the default), and predict + explanation; and the
    NumPy work alone (the score of one photo, one class activation map), which machine load disturbs less."""
    data = path.read_bytes()
    outputs = classifier.outputs(classifier.load(data)[None], feature_map=True)
    index = int(outputs.probabilities[0].argmax())
    plain = Classifier(
        classifier._run,
        classifier.class_names,
        classifier.image_size,
        backend=classifier.backend,
        model_dir=classifier.model_dir,
        temperature=classifier.temperature,
        trust=dataclasses.replace(Trust(), head=classifier.trust.head),
    )
    return {
        "plain": median_ms(lambda: plain.predict(data), repeats),
        "trust": median_ms(lambda: classifier.predict(data), repeats),
        "explained": median_ms(lambda: classifier.predict_explained(data), repeats),
        "score_only": median_ms(lambda: classifier.ood_scores(outputs), repeats),
        "map_only": median_ms(
            lambda: activation_map(outputs.feature_map[0], classifier.trust.head, index), repeats
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    parser.add_argument("--data", type=Path, required=True, help="dataset root with a test/ split")
    parser.add_argument("--ood", type=Path, required=True, help="folder with far/ and near/ photos")
    parser.add_argument("--repeats", type=int, default=50, help="timed predictions per latency figure")
    parser.add_argument("--seed", type=int, default=0, help="seed of the quadrant each photo goes to")
    args = parser.parse_args()

    classifier = load_classifier(args.model, pool_size=1)
    print(f"model: {classifier.model_dir} ({classifier.backend}); trust scored: {classifier.trust.scored}")
    print(f"thresholds: {classifier.trust.thresholds}")
    test_files = list(scan_class_folder(args.data / "test", classifier.class_names)[1].files)
    test = answers(classifier, test_files)
    far, near = answers(classifier, photos(args.ood / "far")), answers(classifier, photos(args.ood / "near"))

    test_unknown = np.mean([a.status == "unknown" for a in test])
    far_unknown = np.mean([a.status == "unknown" for a in far])
    print(
        f"1. no-garment photos unknown: {far_unknown:.1%} of {len(far)} (target >= 98%); "
        f"test garments unknown: {test_unknown:.1%} of {len(test)} (target <= 5%)"
    )
    near_auc = auroc([a.ood_score for a in test], [a.ood_score for a in near])
    softmax_auc = auroc([-a.confidence for a in test], [-a.confidence for a in near])
    near_unknown = np.mean([a.status == "unknown" for a in near])
    print(
        f"2. unfamiliar garment kinds: AUROC of ood_score {near_auc:.3f} (target >= 0.80), max-softmax "
        f"{softmax_auc:.3f}; {near_unknown:.1%} of {len(near)} answered unknown"
    )
    truth = [f.parent.name for f in test_files]
    accepted = [a.label == t for a, t in zip(test, truth) if a.status == "accept"]
    review = np.mean([a.status == "review" for a in test])
    print(
        f"3. test split: accepted answers {np.mean(accepted):.1%} correct (target >= 97%) covering "
        f"{len(accepted) / len(test):.1%} of photos (target >= 85%); review {review:.1%}"
    )
    quadrants = np.random.default_rng(args.seed).integers(0, 4, len(test_files))
    masses = [quadrant_mass(classifier, f, int(q)) for f, q in zip(test_files, quadrants)]
    print(
        f"4. explanations: heatmap mass mostly in the garment's quadrant for "
        f"{np.mean(np.asarray(masses) > 0.5):.1%} of {len(masses)} test photos (target >= 90%); "
        f"median mass there {np.median(masses):.1%}; method {classifier.explain(test_files[0]).method}"
    )
    ms = latency(classifier, test_files[0], args.repeats)
    print(
        f"5. latency (median of {args.repeats}, one photo): predict {ms['plain']:.2f} ms without trust, "
        f"{ms['trust']:.2f} ms with (+{ms['trust'] - ms['plain']:.2f} ms, budget 1 ms); with explanation "
        f"{ms['explained']:.2f} ms (+{ms['explained'] - ms['trust']:.2f} ms, budget 3 ms); NumPy work alone: "
        f"ood_score {ms['score_only']:.3f} ms, activation map {ms['map_only']:.3f} ms"
    )


if __name__ == "__main__":
    main()
