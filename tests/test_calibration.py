"""Temperature scaling: fitted on validation, applied by serving, never changing an answer."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from clothclf.cli import main
from clothclf.evaluation.evaluate import recalibrate_run
from clothclf.evaluation.metrics import compute_metrics
from clothclf.evaluation.predictions import prediction_rows
from clothclf.numerics import MIN_CALIBRATION_IMAGES, apply_temperature, fit_temperature
from clothclf.runs import evaluation_files, read_csv, read_json, save_evaluation, write_csv, write_json
from clothclf.serving.classifier import load_classifier

NAMES = ("a", "b", "c", "d", "e")


def softmax(z: np.ndarray) -> np.ndarray:
    exp = np.exp(z - z.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def overconfident(n: int, factor: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), reported as softmax(factor * z): over-confident by ``factor``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, len(NAMES)))
    labels = np.array([rng.choice(len(NAMES), p=p) for p in softmax(logits)])
    return softmax(factor * logits), labels


def test_apply_temperature_keeps_every_answer():
    probs, _ = overconfident(100, 1.0, seed=0)
    assert apply_temperature(probs, 1.0) is probs
    for temperature in (0.3, 2.5):
        scaled = apply_temperature(probs, temperature)
        np.testing.assert_allclose(scaled.sum(axis=1), 1.0, rtol=1e-12)
        np.testing.assert_array_equal(scaled.argmax(axis=1), probs.argmax(axis=1))
    assert (apply_temperature(probs, 0.5).max(axis=1) >= probs.max(axis=1) - 1e-12).all()  # sharper
    with pytest.raises(ValueError, match="positive"):
        apply_temperature(probs, 0.0)


def test_fit_recovers_a_known_temperature():
    probs, labels = overconfident(3000, 2.5, seed=1)
    temperature = fit_temperature(probs, labels)
    assert temperature == pytest.approx(2.5, rel=0.1)
    before, after = (
        compute_metrics(labels, probs, NAMES),
        compute_metrics(labels, apply_temperature(probs, temperature), NAMES),
    )
    assert after["ece"] < before["ece"] / 2 and after["log_loss"] < before["log_loss"]
    assert fit_temperature(probs[: MIN_CALIBRATION_IMAGES - 1], labels[: MIN_CALIBRATION_IMAGES - 1]) == 1.0


def test_serving_applies_the_run_temperature(tiny_run, synthetic_dataset, tmp_path):
    model_dir = shutil.copytree(tiny_run, tmp_path / "run")
    write_json(model_dir / "run.json", {**read_json(model_dir / "run.json"), "temperature": 0.5})
    files = sorted(synthetic_dataset.rglob("*.png"))[:6]
    calibrated = load_classifier(model_dir)
    raw = load_classifier(model_dir, temperature=1.0)
    assert calibrated.temperature == 0.5
    pixels = np.stack([raw.load(f) for f in files])
    np.testing.assert_allclose(
        calibrated.probabilities(pixels), apply_temperature(raw.probabilities(pixels), 0.5), atol=1e-6
    )
    with pytest.raises(ValueError, match="positive"):
        load_classifier(model_dir, temperature=-1.0)


def test_recalibrate_an_older_run_and_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    write_json(run / "class_names.json", list(NAMES))
    write_json(run / "run.json", {"status": "complete", "tta": False})
    for split, seed in (("validation", 2), ("test", 3)):
        probs, labels = overconfident(400, 3.0, seed)
        files = [f"{split}/{NAMES[y]}/{i}.jpg" for i, y in enumerate(labels)]
        write_csv(run / f"predictions_{split}.csv", prediction_rows(files, labels, probs, NAMES))
        write_json(run / f"metrics_{split}.json", {**compute_metrics(labels, probs, NAMES), "split": split})
    before = read_json(run / "metrics_test.json")

    old, new = recalibrate_run(run)
    assert old == 1.0 and new == pytest.approx(3.0, rel=0.15)
    after = read_json(run / "metrics_test.json")
    assert after["split"] == "test" and after["temperature"] == new  # other keys kept
    assert after["accuracy"] == before["accuracy"] and after["confusion_matrix"] == before["confusion_matrix"]
    assert after["ece"] < before["ece"] / 2
    assert read_json(run / "run.json")["temperature"] == new

    assert main(["calibrate", "--model", str(run)]) == 0  # fitting again changes (almost) nothing
    assert json.loads((run / "run.json").read_text())["temperature"] == pytest.approx(new, rel=1e-3)
    assert "temperature" in capsys.readouterr().out
    rows = read_csv(run / "predictions_validation.csv")
    write_csv(run / "predictions_validation.csv", rows[: MIN_CALIBRATION_IMAGES - 1])
    assert main(["calibrate", "--model", str(run)]) == 1  # too few to fit: says so, changes nothing
    assert f"needs at least {MIN_CALIBRATION_IMAGES}" in capsys.readouterr().err
    assert read_json(run / "run.json")["temperature"] == pytest.approx(new, rel=1e-3)
    (run / "predictions_validation.csv").unlink()
    assert main(["calibrate", "--model", str(run)]) == 1
    assert "predictions_validation.csv" in capsys.readouterr().err


def test_recalibrating_rescales_saved_evaluations_too(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_json(run / "class_names.json", list(NAMES))
    write_json(run / "run.json", {"status": "complete"})
    for split, seed in (("validation", 2), ("shop", 4)):
        probs, labels = overconfident(400, 3.0, seed)
        rows = prediction_rows([f"{i}.jpg" for i in range(len(labels))], labels, probs, NAMES)
        metrics = {**compute_metrics(labels, probs, NAMES), "split": split}
        if split == "validation":
            write_csv(run / "predictions_validation.csv", rows)
            write_json(run / "metrics_validation.json", metrics)
        else:
            save_evaluation(run, split, metrics, rows)
    before = read_json(evaluation_files(run, "shop").metrics)
    _, new = recalibrate_run(run)
    after = read_json(run / "evaluations" / "shop" / "metrics.json")
    assert after["temperature"] == new and after["split"] == "shop"
    assert after["accuracy"] == before["accuracy"] and after["ece"] < before["ece"] / 2
