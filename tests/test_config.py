"""One schema for training options: each TrainConfig field declares its label, help and rules once, and
the CLI parser, TrainConfig.validate and the Fine-tune page read them from there."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from clothclf.cli import build_parser, train_config_from_args
from clothclf.config import Option, Paths, TrainConfig, default, options


def test_every_field_but_the_dataset_and_augmentation_is_an_option():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(options()) == fields - {"data_dir", "augment"}
    assert all(spec.label and spec.help for spec in options().values())
    # The defaults are the shipped model's recipe (models/default/config.json).
    shipped = json.loads((Path(__file__).resolve().parents[1] / "models/default/config.json").read_text())
    for name in options():
        if name not in {"seed", "epochs", "init_from", "teacher", "overlay"} and name in shipped["train"]:
            assert default(name) == shipped["train"][name], name


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image_size": 8}, "image_size must be between 32 and 512, not 8"),
        ({"epochs": 0}, "epochs must be at least 1, not 0"),
        ({"lr": 0.0}, r"lr must be in \(0, 1\], not 0.0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), not 1.0"),
        ({"label_smoothing": -0.1}, r"label_smoothing must be in \[0, 1\)"),
        ({"backbone": "vgg"}, "unknown backbone 'vgg'"),
        ({"lr_schedule": "step"}, "unknown lr_schedule 'step': choose one of 'plateau', 'cosine'"),
        ({"weights": "places365"}, "unknown weights 'places365'"),
    ],
)
def test_validate_applies_the_declared_rules(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(data_dir="x", **changes).validate()


def test_defaults_and_bounds_are_valid():
    TrainConfig(data_dir="x").validate()
    TrainConfig(data_dir="x", image_size=32, dropout=0.0, weights=None, lr=1.0).validate()


def test_option_bounds_in_words():
    assert Option("a", "b", minimum=32, maximum=512).bounds() == "between 32 and 512"
    assert Option("a", "b", above=0, maximum=1).bounds() == "in (0, 1]"
    assert Option("a", "b", minimum=0).bounds() == "at least 0"
    assert Option("a", "b").bounds() == ""


def test_every_option_is_a_train_flag(tmp_path):
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for name, value in ((n, default(n)) for n in options()):
        flag = name.replace("_", "-")
        expected = f"--no-{flag}" if value is True else f"--{flag}"
        assert expected in help_text, expected


def test_flags_fill_the_config(tmp_path):
    args = build_parser().parse_args(
        ["train", "--data", str(tmp_path), "--dropout", "0.3", "--no-class-weights", "--tta"]
        + ["--weights", "none", "--val-fraction", "0.2", "--lr-schedule", "cosine", "--hidden-units", "64"]
    )
    config = train_config_from_args(args, Paths.from_env())
    assert (config.dropout, config.class_weights, config.tta, config.weights) == (0.3, False, True, None)
    assert (config.val_fraction, config.lr_schedule, config.hidden_units) == (0.2, "cosine", 64)
    untouched = train_config_from_args(build_parser().parse_args(["train", "--data", "d"]), Paths.from_env())
    assert untouched == TrainConfig(data_dir="d")


def test_a_flag_outside_the_choices_is_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--strategy", "tpu"])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err
