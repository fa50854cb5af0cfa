"""Guards of the shipped model in models/default: its accuracy on the real test split, and its artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clothclf.data.datasets import scan_class_folder
from clothclf.evaluation.evaluate import evaluate_classifier
from clothclf.runs import load_run
from clothclf.serving.classifier import load_classifier

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "default"


def test_shipped_run_folder_is_complete_and_small():
    run = load_run(MODEL_DIR)
    assert run.summary["backbone"] == "efficientnet_lite2" and run.summary["image_size"] == 260
    assert len(run.class_names()) == 10
    assert {"validation", "test"} <= {
        p.stem.removeprefix("metrics_") for p in MODEL_DIR.glob("metrics_*.json")
    }
    assert len(run.predictions("test")) == 372 and len(run.predictions("validation")) == 341
    config = run.config()
    assert config["seed"] == 42 and config["seconds"] > 0 and config["epochs_run"] == len(run.history())
    size_mb = sum(p.stat().st_size for p in MODEL_DIR.iterdir()) / 1e6
    assert size_mb < 55  # model.keras and the float and int8 LiteRT models of a 4.9M-parameter network


@pytest.mark.slow
def test_shipped_model_accuracy_on_the_real_test_split(shared_dataset):
    """Recomputes the test metrics from the photos with the served model (int8 LiteRT where run.json
    says it is served, else float) and holds them to the shipped bar and the saved figures."""
    classifier = load_classifier(MODEL_DIR)
    served = load_run(MODEL_DIR).summary.get("int8", {}).get("served")
    assert classifier.backend == ("litert-int8" if served else "litert")
    split = scan_class_folder(shared_dataset / "test", classifier.class_names)[1]
    metrics, rows = evaluate_classifier(classifier, split, shared_dataset)
    assert metrics["n_images"] == 372 and not metrics["skipped"]
    assert metrics["accuracy"] >= 0.93
    assert metrics["macro_f1"] >= 0.925
    saved = json.loads((MODEL_DIR / "metrics_test.json").read_text())
    assert metrics["accuracy"] == pytest.approx(saved["accuracy"], abs=1e-9)
    assert metrics["confusion_matrix"] == saved["confusion_matrix"]


def test_shipped_files_record_no_path_of_the_machine_that_made_them():
    texts = {
        p.name: p.read_text() for p in MODEL_DIR.parent.rglob("*") if p.suffix in {".json", ".csv", ".md"}
    }
    assert texts, "no text files under models/"
    for name, text in texts.items():
        assert "/work/" not in text and "/home/" not in text and "C:\\" not in text, name
    config = json.loads((MODEL_DIR / "config.json").read_text())
    assert config["train"]["data_dir"] == "" and config["dataset"]["root"] is None
