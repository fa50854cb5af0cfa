"""The full-integer LiteRT variant: exported from a run's Keras model, calibrated on its training photos."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from clothclf.cli import main
from clothclf.data.datasets import create_dataset
from clothclf.errors import RunError
from clothclf.runs import read_summary
from clothclf.serving.classifier import load_classifier


@pytest.mark.slow
def test_export_int8_serves_the_same_answers(tiny_run, synthetic_dataset, tmp_path, capsys):
    model = Path(shutil.copytree(tiny_run, tmp_path / "model"))
    with pytest.raises(RunError, match="export --int8"):
        load_classifier(model, backend="litert-int8")
    assert main(["export", "--int8", "--model", str(model), "--data", str(synthetic_dataset)]) == 0
    captured = capsys.readouterr()
    printed, steps = captured.out.splitlines(), captured.err.splitlines()
    assert printed[0] == str(model / "model_int8.tflite")
    assert re.fullmatch(r"converting: 0 s, about \d+ s left", steps[0])  # each step, with an estimate
    validation = len(create_dataset(synthetic_dataset).validation)
    for kind in ("float", "int8"):  # or a count
        assert f"evaluating: {validation}/{validation} validation photos ({kind})" in steps
    record = read_summary(model)["int8"]
    assert printed[1].startswith(f"validation accuracy: int8 {record['val_accuracy']:.4f}")
    assert record["served"] == (record["fp32_val_accuracy"] - record["val_accuracy"] <= 0.003)
    rescored = f"evaluating: {validation}/{validation} validation photos (served)"
    assert (rescored in steps) == record["served"]  # the saved evaluations, scored again when int8 serves
    auto = load_classifier(model)
    assert auto.backend == ("litert-int8" if record["served"] else "litert")
    assert auto.trust.scored  # the int8 model has the feature outputs trust needs
    saved = json.loads((model / "metrics_validation.json").read_text())
    assert saved.get("backend", "litert") == auto.backend  # the report shows what serving answers

    files = sorted(str(p) for p in (synthetic_dataset / "test").rglob("*.png"))
    int8 = load_classifier(model, backend="litert-int8")
    reference = load_classifier(model, backend="keras")
    quantized, exact = int8.predict_batch(files), reference.predict_batch(files)
    assert int8.backend == "litert-int8"
    agree = np.mean([a.label == b.label for a, b in zip(quantized, exact)])
    assert agree >= 0.75, agree  # int8 rounding may flip a borderline photo, not the model
    for prediction in quantized:
        assert sum(prediction.probabilities.values()) == pytest.approx(
            1.0, abs=0.02
        )  # outputs in steps of 1/256
