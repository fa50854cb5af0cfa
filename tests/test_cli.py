"""Every CLI command, in-process through ``main`` (fast) and as a real subprocess where exit codes matter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import CLASSES, PROJECT_ROOT, make_image

from clothclf.cli import main
from clothclf.runs import EVALUATIONS, load_run
from clothclf.serving.classifier import load_classifier


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "clothclf", *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def model_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run, so commands that write into it do not touch the shared fixture."""
    return Path(shutil.copytree(tiny_run, tmp_path / "model"))


def test_train_json(synthetic_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(synthetic_dataset), "--weights", "none", "--image-size", "32"]
    args += ["--backbone", "mobilenet_v2"]
    args += ["--epochs", "1", "--head-only", "--batch-size", "8", "--out", str(out), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"val_accuracy", "epochs", "seconds", "run_dir"} <= set(summary)
    assert summary["run_dir"] == str(out) and summary["epochs"] == 1
    saved = json.loads((out / "run.json").read_text())  # the saved model's accuracy, not the best epoch's
    assert summary["val_accuracy"] == saved["val_accuracy"]
    assert summary["best_epoch_val_accuracy"] == saved["best_val_accuracy"]
    config = json.loads((out / "config.json").read_text())["train"]
    assert config["head_only"] and config["weights"] is None and config["image_size"] == 32


def test_train_config_replay_with_override(model_copy, synthetic_dataset, tmp_path, capsys):
    from clothclf.cli import build_parser, train_config_from_args
    from clothclf.config import Paths

    args = build_parser().parse_args(
        ["train", "--config", str(model_copy / "config.json"), "--epochs", "7", "--no-augment"]
    )
    config = train_config_from_args(args, Paths.from_env())
    assert config.epochs == 7 and config.image_size == 32 and not config.augment.enabled
    assert config.data_dir == str(synthetic_dataset)


def test_evaluate_json_and_saved_artifacts(model_copy, synthetic_dataset, capsys):
    code = main(["evaluate", "--model", str(model_copy), "--data", str(synthetic_dataset), "--json"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"accuracy", "macro_f1", "n_images", "class_names", "per_class", "confusion_matrix"} <= set(
        metrics
    )
    assert metrics["n_images"] == 12 and metrics["split"] == "test"
    assert sum(map(sum, metrics["confusion_matrix"])) == 12
    saved = model_copy / EVALUATIONS / "test"
    assert json.loads((saved / "metrics.json").read_text())["n_images"] == 12
    rows = (saved / "predictions.csv").read_text().splitlines()
    assert len(rows) == 13 and rows[1].startswith("test/")


def test_evaluate_never_changes_what_training_wrote(model_copy, synthetic_dataset, capsys):
    before = {p.name: p.read_bytes() for p in model_copy.iterdir() if p.is_file()}
    assert (
        main(["evaluate", "--model", str(model_copy), "--data", str(synthetic_dataset), "--name", "again"])
        == 0
    )
    assert {p.name: p.read_bytes() for p in model_copy.iterdir() if p.is_file()} == before
    assert load_run(model_copy).metrics("again")["split"] == "test"
    assert f"saved in {model_copy / EVALUATIONS / 'again'}" in capsys.readouterr().err


def test_evaluate_refuses_a_bad_name_before_evaluating(model_copy, synthetic_dataset, capsys, monkeypatch):
    import clothclf.evaluation.evaluate

    monkeypatch.setattr(clothclf.evaluation.evaluate, "evaluate_classifier", lambda *a: pytest.fail("ran"))
    for name in ("../escape", ".hidden", "a/b"):
        args = ["evaluate", "--model", str(model_copy), "--data", str(synthetic_dataset), "--name", name]
        assert main(args) == 1
    assert "cannot name an evaluation" in capsys.readouterr().err
    assert not (model_copy / EVALUATIONS).exists()


def test_evaluate_into_a_folder_that_cannot_be_written_only_warns(model_copy, synthetic_dataset, capsys):
    (model_copy / EVALUATIONS).write_text("a file where the folder would go")
    assert main(["evaluate", "--model", str(model_copy), "--data", str(synthetic_dataset), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["n_images"] == 12
    assert "warning: not saved: cannot save the evaluation" in err


def test_evaluate_class_folder_human_output(model_copy, synthetic_dataset, capsys):
    folder = synthetic_dataset / "validation"
    assert main(["evaluate", "--model", str(model_copy), "--data", str(folder), "--no-save"]) == 0
    out = capsys.readouterr().out
    assert "12 images" in out and "accuracy" in out and all(name in out for name in CLASSES)
    assert not (model_copy / "metrics_validation_.json").exists()


def test_evaluate_reads_split_folders_named_as_training_reads_them(
    model_copy, synthetic_dataset, tmp_path, capsys
):
    data = tmp_path / "shop"
    shutil.copytree(synthetic_dataset / "train", data / "Train")
    shutil.copytree(synthetic_dataset / "validation", data / "Val")
    args = ["evaluate", "--model", str(model_copy), "--data", str(data), "--no-save"]
    assert main([*args, "--split", "validation", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 12  # Val, not the class folder "Train"
    assert main(args) == 1  # the default split, test, is not there
    assert "no test folder (its splits: train, validation)" in capsys.readouterr().err


def test_predict_json_lines_and_exit_status(model_copy, tmp_path):
    good = tmp_path / "good.png"
    import numpy as np

    make_image(0, np.random.default_rng(1)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_text("<html>not an image</html>")
    done = run_cli("predict", "--model", str(model_copy), "--json", "--top-k", "2", str(good), str(bad))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0]["file"] == str(good) and lines[0]["closest"] in CLASSES
    assert 0 <= lines[0]["confidence"] <= 1 and len(lines[0]["top_k"]) == 2
    assert lines[1]["file"] == str(bad) and "error" in lines[1]

    done = run_cli("predict", "--model", str(model_copy), str(good))
    assert done.returncode == 0 and "%" in done.stdout


def test_predict_missing_model_is_a_message(tmp_path):
    done = run_cli("predict", "--model", str(tmp_path / "nowhere"), str(tmp_path / "x.jpg"))
    assert done.returncode == 1
    assert "not a clothclf model folder" in done.stderr and "Traceback" not in done.stderr


def test_export_converts_a_head_only_run_to_one_tflite(model_copy, synthetic_dataset, capsys):
    files = sorted((synthetic_dataset / "test").rglob("*.png"))
    pair = load_classifier(model_copy).predict_batch(files)  # features.tflite + head.npz
    assert not (model_copy / "model.tflite").exists()
    assert main(["export", "--model", str(model_copy)]) == 0
    assert (model_copy / "model.tflite").stat().st_size > 0
    whole = load_classifier(model_copy).predict_batch(files)  # model.tflite comes first
    assert [p.label for p in whole] == [p.label for p in pair]
    np.testing.assert_allclose([p.confidence for p in whole], [p.confidence for p in pair], atol=1e-4)
    capsys.readouterr()
    assert main(["export", "--model", str(model_copy)]) == 0  # a second time: says so, writes nothing
    assert "already there (--force writes it again)" in capsys.readouterr().out


def test_runs_lists_complete_runs_only(tiny_run, monkeypatch, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "good")
    (runs / ".partial-half").mkdir(parents=True)
    (runs / "broken").mkdir()
    monkeypatch.setenv("CLOTHCLF_RUNS_DIR", str(runs))
    assert main(["runs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [Path(r["path"]).name for r in listed] == ["good"]


def test_help_and_version():
    done = run_cli("--version")
    assert done.returncode == 0 and "clothclf" in done.stdout
    done = run_cli("train", "--help")
    assert "--fine-tune-layers" in done.stdout and "--strategy" in done.stdout
