"""Knowledge distillation (``--teacher RUN``): a run's answers on the training photos blended into the
targets of the image phases."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import tiny_config


def test_teacher_targets_blend_the_teachers_answers_with_the_labels(tiny_run, synthetic_dataset):
    from clothclf.data.datasets import create_dataset, decode_split
    from clothclf.serving.classifier import load_classifier
    from clothclf.training.distill import teacher_targets

    train = create_dataset(synthetic_dataset).train
    classes = load_classifier(tiny_run).class_names
    blended = teacher_targets(tiny_run, train, classes, 0.3)
    probs = load_classifier(tiny_run).probabilities(decode_split(train, 32).images)
    one_hot = np.eye(len(classes))[list(train.labels)]
    np.testing.assert_allclose(blended, 0.7 * one_hot + 0.3 * probs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(blended.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(teacher_targets(tiny_run, train, classes, 0.0), one_hot)


def test_a_teacher_of_other_classes_is_refused(tiny_run, synthetic_dataset, tmp_path):
    from clothclf.data.datasets import create_dataset
    from clothclf.errors import RunError
    from clothclf.training.distill import teacher_targets

    other = shutil.copytree(tiny_run, tmp_path / "other")
    (other / "class_names.json").write_text(json.dumps(["cat", "dog", "fish"]))
    train = create_dataset(synthetic_dataset).train
    with pytest.raises(RunError, match="teacher's classes"):
        teacher_targets(other, train, ("red", "green", "blue"), 0.5)


def test_fine_tuning_trains_on_the_teachers_targets_and_records_the_teacher(
    tiny_run, synthetic_dataset, tmp_path, monkeypatch
):
    from clothclf.data.datasets import create_dataset
    from clothclf.training import loop
    from clothclf.training.distill import teacher_targets

    seen = []

    def spy(split, *args, **kwargs):
        seen.append(kwargs.get("targets"))
        return make_file_dataset(split, *args, **kwargs)

    make_file_dataset = loop.make_file_dataset
    monkeypatch.setattr(loop, "make_file_dataset", spy)
    recipe = dict(init_from=str(tiny_run), teacher=str(tiny_run), teacher_weight=0.4, fine_tune_epochs=1)
    run_dir = loop.train(
        tiny_config(synthetic_dataset, fine_tune_layers=20, **recipe), tmp_path / "s"
    ).run_dir
    train_targets = seen[0]  # the training photos' (validation keeps its labels)
    dataset = create_dataset(synthetic_dataset)
    expected = teacher_targets(tiny_run, dataset.train, dataset.class_names, 0.4)
    np.testing.assert_allclose(train_targets, expected, rtol=1e-5)
    assert seen[1] is None and len(np.unique(train_targets)) > 2
    recorded = json.loads((run_dir / "config.json").read_text())["train"]
    assert (recorded["teacher"], recorded["teacher_weight"]) == (str(tiny_run), 0.4)


def test_file_batches_carry_the_given_targets_and_refuse_a_wrong_shape(tmp_path):
    from helpers import CLASSES, write_dataset

    from clothclf.data.datasets import Split
    from clothclf.data.pipeline import make_file_dataset

    write_dataset(tmp_path, {"": 2})
    files = sorted(tmp_path.glob("*/*.png"))
    split = Split(tuple(files), tuple(CLASSES.index(f.parent.name) for f in files))
    targets = np.random.default_rng(0).dirichlet(np.ones(len(CLASSES)), len(files)).astype(np.float32)
    batch = next(iter(make_file_dataset(split, 16, len(CLASSES), len(files), targets=targets)))
    np.testing.assert_allclose(batch[1].numpy(), targets)
    with pytest.raises(ValueError, match="targets must have shape"):
        make_file_dataset(split, 16, len(CLASSES), 2, targets=targets[:2])
