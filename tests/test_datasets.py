"""Folder datasets: both layouts, seeded stratified splits, fingerprints, class weights, decoding."""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import CLASSES, make_image, write_dataset

from clothclf.data.datasets import (
    Split,
    class_weights,
    create_dataset,
    dataset_fingerprint,
    decode_split,
    scan_class_folder,
)
from clothclf.errors import DatasetError

SORTED_CLASSES = tuple(sorted(CLASSES))


@pytest.fixture
def split_dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "splits", {"train": 4, "validation": 2, "test": 2})


@pytest.fixture
def flat_dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "flat", {"": 10})


def assert_labels_match_folders(dataset, split_name: str) -> None:
    split = dataset.split(split_name)
    assert [dataset.class_names[label] for label in split.labels] == [p.parent.name for p in split.files]


def test_split_folders_layout(split_dataset):
    dataset = create_dataset(split_dataset)
    assert dataset.layout == "splits"
    assert dataset.class_names == SORTED_CLASSES
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (12, 6, 6)
    for name in ("train", "validation", "test"):
        assert all(p.parts[-3] == name for p in dataset.split(name).files)
        assert_labels_match_folders(dataset, name)
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        dataset.split("dev")


def test_flat_folder_layout_is_split_stratified(flat_dataset):
    dataset = create_dataset(flat_dataset, seed=1, val_fraction=0.2, test_fraction=0.1)
    assert dataset.layout == "folder"
    splits = [set(dataset.split(name).files) for name in ("train", "validation", "test")]
    assert sum(len(s) for s in splits) == 30 and len(set().union(*splits)) == 30, "splits must partition"
    assert Counter(dataset.validation.labels) == {0: 2, 1: 2, 2: 2}, "every class in validation"
    assert Counter(dataset.test.labels) == {0: 1, 1: 1, 2: 1}
    for name in ("train", "validation", "test"):
        assert_labels_match_folders(dataset, name)


def test_split_is_deterministic_per_seed(flat_dataset):
    first = create_dataset(flat_dataset, seed=7).split_record()
    assert create_dataset(flat_dataset, seed=7).split_record() == first
    assert create_dataset(flat_dataset, seed=8).split_record()["validation"] != first["validation"]


def test_split_record_lists_relative_paths(split_dataset):
    dataset = create_dataset(split_dataset)
    record = dataset.split_record()
    assert sorted(record) == ["test", "train", "validation"]
    assert "validation/red/red_0.png" in record["validation"]
    assert [dataset.root / p for p in record["train"]] == list(dataset.train.files)


def test_fingerprint_is_stable_portable_and_content_sensitive(tmp_path, split_dataset):
    dataset = create_dataset(split_dataset)
    fingerprint = dataset_fingerprint(dataset)
    assert dataset_fingerprint(create_dataset(split_dataset)) == fingerprint
    copy = shutil.copytree(split_dataset, tmp_path / "elsewhere")
    assert dataset_fingerprint(create_dataset(copy)) == fingerprint, "only relative paths count"

    target = copy / "train" / "green" / "green_1.png"
    make_image(0, np.random.default_rng(99)).save(target)
    assert dataset_fingerprint(create_dataset(copy)) != fingerprint


def test_class_weights_are_balanced():
    split = Split(tuple(Path(f"{i}.png") for i in range(12)), (0,) * 6 + (1,) * 2 + (2,) * 4)
    weights = class_weights(split, num_classes=4)
    # n / (k * n_c) with n = 12 images and k = 3 classes present.
    assert weights == pytest.approx({0: 12 / 18, 1: 12 / 6, 2: 12 / 12, 3: 0.0})
    assert weights[1] > weights[2] > weights[0], "rare classes weigh more"
    assert sum(weights[c] * n for c, n in Counter(split.labels).items()) == pytest.approx(12)


def test_scan_with_unknown_class_names_is_an_error(split_dataset):
    with pytest.raises(DatasetError, match=r"class folders \['red'\] are not among the model's classes"):
        scan_class_folder(split_dataset / "validation", ("blue", "green"))
    names, split = scan_class_folder(split_dataset / "validation", ("red", "green", "blue", "extra"))
    assert names == ("red", "green", "blue", "extra")
    assert [names[label] for label in split.labels] == [p.parent.name for p in split.files]


def test_scan_empty_or_missing_folders_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class folders with images"):
        scan_class_folder(tmp_path / "empty")
    (tmp_path / "empty" / "shirt").mkdir()
    (tmp_path / "empty" / "shirt" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match="no class folders with images"):
        scan_class_folder(tmp_path / "empty")
    with pytest.raises(DatasetError, match="no such folder"):
        scan_class_folder(tmp_path / "missing")


def test_scan_finds_upper_case_extensions_and_ignores_hidden_files(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("shirt", "skirt"):
        (tmp_path / name).mkdir()
        make_image(0, rng).save(tmp_path / name / "photo.JPG", format="JPEG")
        make_image(0, rng).save(tmp_path / name / "other.Jpeg", format="JPEG")
        make_image(0, rng).save(tmp_path / name / ".hidden.png")
    for ignored in (".thumbnails", "_cache"):
        (tmp_path / ignored).mkdir()
        make_image(0, rng).save(tmp_path / ignored / "a.png")
    names, split = scan_class_folder(tmp_path)
    assert names == ("shirt", "skirt")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in split.files) == [
        "shirt/other.Jpeg",
        "shirt/photo.JPG",
        "skirt/other.Jpeg",
        "skirt/photo.JPG",
    ]


def test_create_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset folder"):
        create_dataset(tmp_path / "missing")
    write_dataset(tmp_path / "few", {"train": 4})
    with pytest.raises(
        DatasetError, match=r"each class needs at least 5 photos .*: blue \(4\), green \(4\), red"
    ):
        create_dataset(tmp_path / "few")
    (tmp_path / "one_class" / "shirt").mkdir(parents=True)
    make_image(0, np.random.default_rng(0)).save(tmp_path / "one_class" / "shirt" / "a.png")
    with pytest.raises(DatasetError, match="at least two classes .*; it has only 'shirt'"):
        create_dataset(tmp_path / "one_class")


def test_a_train_folder_without_validation_holds_validation_out_of_train(tmp_path):
    dataset = create_dataset(write_dataset(tmp_path / "ds", {"train": 12, "test": 2}), seed=3)
    assert dataset.layout == "held-out"
    assert Counter(dataset.validation.labels) == {
        0: 3,
        1: 3,
        2: 3,
    }  # grown towards 50 photos: 25% of 12 per class
    assert not set(dataset.validation.files) & set(dataset.train.files)
    assert all(p.parts[-3] == "train" for p in dataset.validation.files)
    assert len(dataset.test) == 6 and all(p.parts[-3] == "test" for p in dataset.test.files)


def test_decode_split_skips_an_unreadable_file_with_one_warning(split_dataset, caplog):
    broken = split_dataset / "validation" / "green" / "x.jpg"
    broken.write_bytes(b"this is not a jpeg" * 10)
    dataset = create_dataset(split_dataset)
    assert broken in dataset.validation.files
    with caplog.at_level(logging.WARNING, logger="clothclf.data.datasets"):
        decoded = decode_split(dataset.validation, image_size=16, workers=2)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(broken) in warnings[0].getMessage()
    assert decoded.skipped == (str(broken),)
    assert decoded.images.shape == (6, 16, 16, 3) and decoded.images.dtype == np.uint8
    assert broken not in decoded.files and len(decoded.files) == 6
    assert [dataset.class_names[label] for label in decoded.labels] == [p.parent.name for p in decoded.files]


def test_a_dataset_reached_through_a_link_has_its_files_under_its_root(tmp_path):
    """The root and the files are read through the same links (CI reaches ../shared by a symlink)."""
    real = write_dataset(tmp_path / "real", {"train": 4, "validation": 2, "test": 2})
    link = tmp_path / "link"
    link.symlink_to(real)
    dataset = create_dataset(link)
    assert all(path.is_relative_to(dataset.root) for path in dataset.train.files)
    assert dataset_fingerprint(dataset) == dataset_fingerprint(create_dataset(real))
