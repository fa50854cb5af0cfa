"""Overlays of decisions on a dataset's photos: written safely, refused in one sentence when corrupt or
stale, applied by dataset reading, training (recorded in run.json) and evaluation (both label sets)."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import tiny_config, write_dataset

from clothclf.cli import main
from clothclf.data.datasets import create_dataset, dataset_fingerprint
from clothclf.data.overlay import (
    EXCLUDE,
    KEEP,
    RELABEL,
    Decision,
    Overlay,
    OverlayError,
    file_digest,
    overlay_path,
    read_overlay,
    write_overlay,
)
from clothclf.runs import read_json


def decisions_on(root) -> Overlay:
    """Relabel one training and one test photo, exclude one training photo, keep one."""
    dataset = create_dataset(root)

    def decision(file: str, action: str, label: str | None = None) -> Decision:
        return Decision(file, action, label, file_digest(root / file))

    return Overlay(
        dataset_fingerprint(dataset),
        (
            decision("train/red/red_0.png", RELABEL, "green"),
            decision("train/red/red_1.png", EXCLUDE),
            decision("train/red/red_2.png", KEEP),
            decision("test/blue/blue_0.png", RELABEL, "red"),
        ),
    )


@pytest.fixture
def dataset_and_overlay(tmp_path):
    root = write_dataset(tmp_path / "ds", {"train": 12, "validation": 4, "test": 4})
    return root, write_overlay(tmp_path / "overlay.json", decisions_on(root))


def test_the_overlay_relabels_and_excludes_without_touching_the_photos(dataset_and_overlay):
    root, file = dataset_and_overlay
    before = sorted(p.relative_to(root) for p in root.rglob("*.png"))
    plain, corrected = create_dataset(root), create_dataset(root, overlay=file)
    assert len(corrected.train) == len(plain.train) - 1
    labels = dict(zip(corrected.train.files, corrected.train.labels))
    assert corrected.class_names[labels[root / "train/red/red_0.png"]] == "green"
    assert root / "train/red/red_1.png" not in labels
    assert corrected.overlay_digest == read_overlay(file).digest() and plain.overlay_digest is None
    assert sorted(p.relative_to(root) for p in root.rglob("*.png")) == before


def test_writing_keeps_the_previous_file_and_decisions_replace_each_other(tmp_path):
    path = overlay_path(type("P", (), {"runs_dir": tmp_path})(), "abc")
    first = Overlay("abc").decide(Decision("train/a.png", EXCLUDE))
    write_overlay(path, first)
    second = first.decide(Decision("train/a.png", RELABEL, "red"))
    write_overlay(path, second)
    assert read_overlay(path) == second and len(second.decisions) == 1
    assert read_overlay(path.with_name(path.name + ".prev")) == first
    assert first.digest() != second.digest()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "not a readable overlay file"),
        ('{"version": 9, "fingerprint": "", "decisions": []}', "overlay version 9"),
        ('{"version": 1, "decisions": [{"file": "x.png", "action": "burn"}]}', "unknown action 'burn'"),
        ('{"version": 1, "decisions": [{"file": "x.png", "action": "relabel"}]}', "names no class"),
        ("[]", "not an overlay file"),
    ],
)
def test_a_corrupt_overlay_is_one_sentence(tmp_path, content, words):
    path = tmp_path / "overlay.json"
    path.write_text(content)
    with pytest.raises(OverlayError, match=words) as caught:
        read_overlay(path)
    assert "\n" not in str(caught.value)


def test_a_stale_overlay_is_one_sentence(dataset_and_overlay, tmp_path):
    root, file = dataset_and_overlay
    copy = shutil.copytree(root, tmp_path / "copy")
    (copy / "train/red/red_0.png").write_bytes((copy / "train/red/red_5.png").read_bytes())
    with pytest.raises(OverlayError, match="train/red/red_0.png has changed since it was reviewed"):
        create_dataset(copy, overlay=file)
    shutil.copyfile(root / "train/red/red_0.png", copy / "train/red/red_0.png")
    (copy / "train/red/red_1.png").unlink()
    with pytest.raises(OverlayError, match="red_1.png is no longer in the dataset"):
        create_dataset(copy, overlay=file)
    unknown = Overlay("", (Decision("train/red/red_3.png", RELABEL, "purple"),))
    with pytest.raises(OverlayError, match="'purple', which is not a class of the dataset"):
        create_dataset(root, overlay=write_overlay(tmp_path / "unknown.json", unknown))


def test_training_applies_the_overlay_and_records_its_digest(dataset_and_overlay, tmp_path):
    from clothclf.training.loop import train

    root, file = dataset_and_overlay
    run = train(tiny_config(root, epochs=1, overlay=str(file)), tmp_path / "run").run_dir
    summary, config = read_json(run / "run.json"), read_json(run / "config.json")
    assert summary["overlay_digest"] == read_overlay(file).digest()
    assert config["train"]["overlay"] == str(file)
    assert config["dataset"]["sizes"]["train"] == 3 * 12 - 1


def test_evaluation_reports_original_and_corrected_labels(dataset_and_overlay, tiny_run, capsys):
    root, file = dataset_and_overlay
    args = ["evaluate", "--model", str(tiny_run), "--data", str(root), "--split", "test", "--no-save"]
    assert main([*args, "--overlay", str(file), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["corrected"]["photos_changed"] == 1
    assert metrics["corrected"]["n_images"] == metrics["n_images"] == 12
    assert metrics["corrected"]["overlay_digest"] == read_overlay(file).digest()
    assert main([*args, "--split", "validation", "--overlay", str(file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["corrected"] is None  # nothing of validation changed
    assert main([*args, "--overlay", str(file)]) == 0
    assert f"on the labels {file} corrects (1 changed)" in capsys.readouterr().out


TINY = ["--head-only", "--backbone", "mobilenet_v2", "--weights", "none", "--image-size", "32"]


def test_the_cli_refuses_a_stale_overlay_in_one_line(dataset_and_overlay, tmp_path, capsys):
    root, _ = dataset_and_overlay
    stale = write_overlay(tmp_path / "stale.json", Overlay("", (Decision("train/red/gone.png", EXCLUDE),)))
    assert main(["train", "--data", str(root), "--overlay", str(stale), *TINY]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"clothclf: error: {stale} is stale: train/red/gone.png is no longer in the dataset"
    assert main(["train", "--data", str(root), "--overlay", str(tmp_path / "none.json")]) == 1
    assert "no such file" in capsys.readouterr().err
