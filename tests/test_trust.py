"""Trust scores, statuses and explanations: the NumPy pieces by hand, then on the tiny run (new and old format)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import CLASSES
from PIL import Image

from clothclf.cli import main
from clothclf.evaluation.risk import operating_point, risk_coverage, unknown_effect
from clothclf.runs import TRUST_FILE, read_csv, read_json, write_json
from clothclf.serving.classifier import ExplanationUnavailable, Trust, load_classifier
from clothclf.serving.explain import head_gradient
from clothclf.serving.runtime import DenseHead
from clothclf.serving.trust import (
    STATUSES,
    FeatureBank,
    Thresholds,
    build_bank,
    fit_review_confidence,
    fit_thresholds,
    fit_trust,
)

MAX_BANK_BYTES = 10 * 1024 * 1024


def test_review_confidence_is_the_lowest_that_reaches_the_target():
    confidence = np.asarray([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    correct = np.asarray([True, True, True, False, True, False])
    # accuracy from the top: 1, 1, 1, 0.75, 0.8, 0.667
    assert fit_review_confidence(confidence, correct, 0.8) == 0.7
    assert fit_review_confidence(confidence, correct, 0.9) == 0.9
    assert fit_review_confidence(confidence, np.zeros(6, bool), 0.5) == 1.0


def test_thresholds_set_aside_the_unknown_rate_and_order_statuses():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=1000)
    thresholds = fit_thresholds(scores, np.full(1000, 0.9), np.ones(1000, bool), 0.97, 0.02)
    assert np.mean(scores >= thresholds.unknown) == pytest.approx(0.02, abs=0.002)
    assert Thresholds(review=0.6, unknown=1.0).status(0.99, 1.5) == "unknown"
    assert Thresholds(review=0.6, unknown=1.0).status(0.5, 0.0) == "review"
    assert Thresholds(review=0.6, unknown=1.0).status(0.7, None) == "accept"


def clusters(rng, centers: np.ndarray, n: int) -> np.ndarray:
    return np.abs(centers[rng.integers(0, len(centers), n)] + 0.05 * rng.normal(size=(n, centers.shape[1])))


def test_far_features_score_higher_than_familiar_ones_and_the_bank_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    centers = np.abs(rng.normal(size=(3, 32)))
    train, val = clusters(rng, centers, 300), clusters(rng, centers, 100)
    far = np.abs(rng.normal(size=(20, 32)))  # not near any cluster
    logits = lambda f: f[:, :3] * 2.0  # noqa: E731
    confidence, correct = np.full(100, 0.9), np.ones(100, bool)
    bank, record = fit_trust(train, val, logits(val), confidence, correct)
    assert record["validation"]["unknown"] == pytest.approx(0.02, abs=0.011)
    far_scores = bank.ood_scores(far, logits(far))
    assert np.mean(far_scores >= record["unknown_threshold"]) >= 0.9
    bank.save(tmp_path / TRUST_FILE)
    loaded = FeatureBank.load(tmp_path / TRUST_FILE)
    np.testing.assert_allclose(loaded.ood_scores(far, logits(far)), far_scores, atol=0.05)


def test_bank_of_3000_photos_fits_the_size_budget(tmp_path):
    rng = np.random.default_rng(2)
    bank = build_bank(np.abs(rng.normal(size=(3068, 1280))).astype(np.float32))
    bank.save(tmp_path / TRUST_FILE)
    assert (tmp_path / TRUST_FILE).stat().st_size <= MAX_BANK_BYTES


def test_head_gradient_matches_finite_differences(tmp_path):
    rng = np.random.default_rng(3)
    kernels = [rng.normal(size=(6, 5)), rng.normal(size=(5, 3))]
    np.savez(
        tmp_path / "head.npz",
        activations=np.asarray(["relu", "softmax"]),
        kernel_0=kernels[0],
        bias_0=rng.normal(size=5),
        kernel_1=kernels[1],
        bias_1=rng.normal(size=3),
    )
    head = DenseHead(tmp_path / "head.npz")
    features = rng.normal(size=6).astype(np.float32)
    gradient = head_gradient(head, features, 2)
    step = 1e-3
    numeric = [
        (head.logits((features + step * e)[None])[0, 2] - head.logits((features - step * e)[None])[0, 2])
        / (2 * step)
        for e in np.eye(6, dtype=np.float32)
    ]
    np.testing.assert_allclose(gradient, numeric, atol=1e-2)


def test_risk_coverage_by_hand():
    rows = [
        {"confidence": "0.9", "correct": "True", "status": "accept"},
        {"confidence": "0.8", "correct": "False", "status": "accept"},
        {"confidence": "0.7", "correct": "True", "status": "review"},
        {"confidence": "0.95", "correct": "False", "status": "unknown"},
    ]
    points = risk_coverage(rows)
    assert [(p["coverage"], p["accuracy"]) for p in points] == [(0.25, 1.0), (0.5, 0.5), (0.75, 2 / 3)]
    point = operating_point(rows, 0.8)
    assert point == {"threshold": 0.8, "coverage": 0.5, "accuracy": 0.5, "review": 0.25, "unknown": 0.25}
    assert "25.0% of the test photos" in unknown_effect(point, "test")


def test_tiny_run_answers_carry_status_and_score(tiny_run, synthetic_dataset):
    record = read_json(tiny_run / "run.json")["trust"]
    assert record["accept_accuracy"] == 0.97 and 0 <= record["validation"]["unknown"] <= 0.2
    assert (tiny_run / TRUST_FILE).stat().st_size <= MAX_BANK_BYTES
    classifier = load_classifier(tiny_run)
    assert classifier.trust.scored and classifier.trust_note is None
    files = sorted((synthetic_dataset / "test").rglob("*.png"))
    predictions = classifier.predict_batch(files)
    assert all(p.status in STATUSES and isinstance(p.ood_score, float) for p in predictions)


@pytest.mark.parametrize("split", ["validation", "test"])
def test_saved_predictions_carry_the_status_serving_gives(tiny_run, synthetic_dataset, split):
    saved = {row["file"]: row for row in read_csv(tiny_run / f"predictions_{split}.csv")}
    files = sorted((synthetic_dataset / split).rglob("*.png"))
    assert sorted(saved) == sorted(str(f.relative_to(synthetic_dataset)) for f in files)
    for file, answer in zip(files, load_classifier(tiny_run).predict_batch(files)):
        row = saved[str(file.relative_to(synthetic_dataset))]
        assert row["status"] == answer.status
        assert float(row["ood_score"]) == pytest.approx(answer.ood_score, abs=1e-4)


def test_explanation_is_a_heatmap_of_the_top_label(tiny_run, synthetic_dataset):
    classifier = load_classifier(tiny_run)
    photo = sorted((synthetic_dataset / "test").rglob("*.png"))[0]
    prediction, explanation = classifier.predict_explained(photo)
    assert explanation.label == prediction.label and explanation.method == "CAM"
    assert explanation.heatmap.ndim == 2 and 0 <= explanation.heatmap.min() <= explanation.heatmap.max() <= 1
    assert explanation.resized(40, 30).shape == (30, 40)


@pytest.fixture
def old_run(tiny_run, tmp_path) -> Path:
    """The tiny run as runs were saved before trust scores: no feature bank, no trust record."""
    run = Path(shutil.copytree(tiny_run, tmp_path / "old"))
    (run / TRUST_FILE).unlink()
    summary = read_json(run / "run.json")
    summary.pop("trust")
    write_json(run / "run.json", summary)
    return run


def test_old_runs_predict_with_status_from_confidence_alone(old_run, synthetic_dataset):
    classifier = load_classifier(old_run)
    assert not classifier.trust.scored and "confidence alone" in classifier.trust_note
    for prediction in classifier.predict_batch(sorted((synthetic_dataset / "test").rglob("*.png"))):
        assert prediction.ood_score is None
        assert prediction.status == ("accept" if prediction.confidence >= 0.5 else "review")


def test_cli_trust_upgrades_an_old_run_and_predict_reports_it(old_run, synthetic_dataset, tmp_path, capsys):
    assert main(["trust", "--model", str(old_run), "--data", str(synthetic_dataset)]) == 0
    assert "review below confidence" in capsys.readouterr().out
    assert (old_run / TRUST_FILE).is_file() and "trust" in read_json(old_run / "run.json")
    photo = sorted((synthetic_dataset / "test").rglob("*.png"))[0]
    out = tmp_path / "explained"
    assert main(["predict", "--model", str(old_run), "--json", "--explain", str(out), str(photo)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["status"] in STATUSES and isinstance(line["ood_score"], float) and line["closest"] in CLASSES
    assert Image.open(out / f"{photo.stem}.png").size == Image.open(photo).size


def test_explaining_without_a_head_says_how_to_fix_it(old_run):
    classifier = load_classifier(old_run)
    classifier.trust = Trust()  # as a model.tflite saved without head.npz
    with pytest.raises(ExplanationUnavailable, match="clothclf trust"):
        classifier.explain(np.zeros((32, 32, 3), np.uint8))


def test_loading_a_classifier_leaves_the_cores_to_litert(tiny_run):
    """A serving process's NumPy BLAS runs on one thread after loading (its small products would
    otherwise wait for the cores LiteRT keeps busy); checked in a fresh process."""
    code = (
        "import sys; from threadpoolctl import threadpool_info; import numpy as np; np.ones((2, 2)) @ np.ones((2, 2))\n"
        "from clothclf.serving.classifier import load_classifier\n"
        "load_classifier(sys.argv[1])\n"
        "print(sorted({lib['num_threads'] for lib in threadpool_info() if lib['user_api'] == 'blas'}))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tiny_run)], capture_output=True, text=True)
    assert done.stdout.strip() == "[1]", done.stderr[-2000:]
