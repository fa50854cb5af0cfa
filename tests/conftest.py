"""Shared fixtures: tiny synthetic datasets and a tiny trained run, with every clothclf folder isolated."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import SHARED_DATASET, tiny_config, write_dataset

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One feature cache for the session (never the user's). Its entries are keyed by content and
    weights, so sharing is safe, and each LiteRT conversion of a tiny extractor (~15 s) happens once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def isolated_paths(tmp_path, monkeypatch, session_cache):
    """Every test gets its own runs and data folders (never the user's) and the session's cache."""
    monkeypatch.setenv("CLOTHCLF_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("CLOTHCLF_CACHE_DIR", str(session_cache))
    monkeypatch.setenv("CLOTHCLF_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    """A 3-class dataset of 24 px images: 12 train, 4 validation, 4 test per class."""
    return write_dataset(
        tmp_path_factory.mktemp("synthetic") / "ds", {"train": 12, "validation": 4, "test": 4}
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, synthetic_dataset, session_cache) -> Path:
    """A complete head-only run folder (model.keras, features.tflite + head.npz, artifacts) of a 32 px MobileNetV2 without
    ImageNet weights, trained for a few head epochs on the synthetic dataset. Built once per session."""
    from clothclf.config import Paths
    from clothclf.training.loop import train

    base = tmp_path_factory.mktemp("tiny_run")
    paths = Paths(base / "data", session_cache, base / "runs", base / "default")
    return train(tiny_config(synthetic_dataset, epochs=3), base / "runs" / "tiny", paths=paths).run_dir


@pytest.fixture
def shared_dataset() -> Path:
    """The real clothing-dataset-small from ../shared; tests using it are marked slow."""
    if not SHARED_DATASET.is_dir():
        pytest.skip("../shared/data/clothing-dataset-small is not available")
    return SHARED_DATASET


@pytest.fixture
def current_model(tmp_path, monkeypatch) -> Path:
    """A stand-in for the shipped model with known validation metrics (its model file is a placeholder)."""
    from clothclf.runs import write_json

    folder = tmp_path / "default-model"
    folder.mkdir()
    (folder / "model.tflite").write_bytes(b"placeholder")
    write_json(folder / "class_names.json", ["blue", "green", "red"])
    write_json(folder / "metrics_validation.json", {"accuracy": 0.25, "macro_f1": 0.2})
    write_json(folder / "run.json", {"name": "shipped", "status": "complete", "image_size": 32})
    monkeypatch.setenv("CLOTHCLF_MODEL_DIR", str(folder))
    return folder


@pytest.fixture
def no_cached_weights(tmp_path, monkeypatch):
    """An empty Keras cache, so the page's weights decision does not depend on the machine."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
