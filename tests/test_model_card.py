"""The shipped model's card and the README's Results row say what the run's own metrics files say."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import PROJECT_ROOT

from clothclf import __version__
from clothclf.evaluation.model_card import model_card
from clothclf.runs import training_evaluation

DEFAULT_MODEL = PROJECT_ROOT / "models" / "default"


def saved_metrics(split: str) -> dict:
    return json.loads(training_evaluation(DEFAULT_MODEL, split).metrics.read_text())


def test_the_shipped_models_card_is_generated_from_its_files():
    card = (DEFAULT_MODEL / "README.md").read_text()
    assert card == model_card(DEFAULT_MODEL, __version__), "run python scripts/model_card.py"


def test_the_card_quotes_the_metrics_files():
    card = model_card(DEFAULT_MODEL, __version__)
    for split in ("validation", "test"):
        metrics = saved_metrics(split)
        row = next(line for line in card.splitlines() if line.startswith(f"| {split} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        expected = [metrics[key] for key in ("accuracy", "top3_accuracy", "macro_f1", "log_loss", "ece")]
        assert cells[1] == str(metrics["n_images"])
        assert [float(cell) for cell in cells[2:]] == pytest.approx(expected, abs=5e-4)
    assert f"clothclf {__version__}" in card


def test_the_readme_results_row_of_the_shipped_model_matches_its_metrics():
    readme = (PROJECT_ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| **Shipped"))
    validation, test = saved_metrics("validation"), saved_metrics("test")
    for value in (validation["accuracy"], test["accuracy"], test["macro_f1"], test["ece"]):
        assert f"{value:.3f}" in row


def test_a_run_without_saved_test_metrics_has_no_card(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(DEFAULT_MODEL, run, ignore=shutil.ignore_patterns("*.keras", "trust.npz"))
    training_evaluation(run, "test").metrics.unlink()
    with pytest.raises(ValueError, match="test split"):
        model_card(run, __version__)
