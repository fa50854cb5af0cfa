"""Two-phase training on tiny synthetic data: run folder contents, progress hook, cancel, strategies."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_config

from clothclf.config import AugmentConfig, Paths, TrainConfig
from clothclf.runs import list_runs, load_run
from clothclf.serving.classifier import load_classifier


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> str:
    """A 32 px MobileNetV2's weights in a file, standing in for ImageNet's (``weights`` may be a file):
    two-phase runs need pretrained weights, and these need no download."""
    import keras

    from clothclf.modeling.models import build_backbone

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_32.weights.h5"
    build_backbone("mobilenet_v2", 32, None).save_weights(path)
    return str(path)


def two_phase_config(data: Path, **overrides) -> TrainConfig:
    """The tiny run (``helpers.tiny_config``) with one fine-tuning epoch of the top 10 layers (two
    phases, given pretrained weights)."""
    values = dict(
        head_only=False, fine_tune_epochs=1, fine_tune_layers=10, augment=AugmentConfig(rotation=0.02)
    )
    return tiny_config(data, **{**values, **overrides})


def test_tiny_run_folder_is_complete(tiny_run):
    run = load_run(tiny_run)
    files = {p.name for p in tiny_run.iterdir()}
    assert {"model.keras", "config.json", "history.csv", "run.json"} <= files
    # A head-only run ships the cached LiteRT extractor and its head instead of converting the model.
    assert {"features.tflite", "head.npz"} <= files and "model.tflite" not in files
    config = run.config()
    assert config["train"]["image_size"] == 32 and config["seed"] == 42
    assert len(config["dataset"]["fingerprint"]) == 32
    assert {"tensorflow", "keras", "numpy", "clothclf"} <= set(config["versions"])
    history = run.history()
    assert [row["phase"] for row in history] == ["head"] * len(history)
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr"} <= set(history[0])
    metrics = run.metrics("validation")
    assert metrics["n_images"] == 12 and 0.0 <= metrics["accuracy"] <= 1.0
    assert len(run.predictions("validation")) == 12
    assert run.class_names() == ["blue", "green", "red"]


def test_two_phase_training_with_progress(synthetic_dataset, tmp_path, pretrained):
    from clothclf.training.loop import train

    events = []
    config = two_phase_config(synthetic_dataset, weights=pretrained)
    result = train(config, tmp_path / "run", progress=events.append)
    phases = [row["phase"] for row in load_run(result.run_dir).history()]
    assert phases == ["head", "head", "fine_tune"]
    assert result.epochs == 3
    seen = {event.phase for event in events}
    assert {"features", "head", "fine_tune", "evaluating"} <= seen  # photos stream: no decoding phase
    fractions = [event.fraction for event in events]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert any(event.batch > 0 and event.batches > 0 for event in events)
    # Fine-tuning changed the backbone, so the whole model is converted, and LiteRT agrees with Keras.
    # (head.npz is there too: every run carries its head for the trust scores.)
    assert (result.run_dir / "model.tflite").is_file() and not (result.run_dir / "features.tflite").exists()
    files = sorted((synthetic_dataset / "validation").rglob("*.png"))
    litert, keras_model = (load_classifier(result.run_dir, backend=b) for b in ("litert", "keras"))
    np.testing.assert_allclose(
        [p.confidence for p in litert.predict_batch(files)],
        [p.confidence for p in keras_model.predict_batch(files)],
        atol=1e-4,
    )


def test_head_only_uses_the_feature_cache(synthetic_dataset, tmp_path, monkeypatch):
    from clothclf.training.loop import train

    cache_dir = tmp_path / "own-cache"
    monkeypatch.setenv("CLOTHCLF_CACHE_DIR", str(cache_dir))
    config = two_phase_config(synthetic_dataset, head_only=True)
    train(config, tmp_path / "a")
    cached = sorted(cache_dir.glob("*.npz")) + sorted(cache_dir.glob("*.tflite"))
    assert len(cached) == 4  # train, validation and test features, and the extractor's LiteRT model
    stamps = [p.stat().st_mtime_ns for p in cached]
    monkeypatch.chdir(synthetic_dataset.parent)  # the same photos, named relative to where we are
    train(dataclasses.replace(config, data_dir=synthetic_dataset.name), tmp_path / "b")
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # reused, not recomputed
    recorded = json.loads((tmp_path / "b" / "config.json").read_text())
    assert recorded["train"]["data_dir"] == recorded["dataset"]["root"] == str(synthetic_dataset.resolve())


def test_custom_cnn_trains_from_scratch(synthetic_dataset, tmp_path):
    from clothclf.training.loop import train

    result = train(two_phase_config(synthetic_dataset, backbone="custom_cnn", epochs=1), tmp_path / "cnn")
    assert [row["phase"] for row in load_run(result.run_dir).history()] == ["train"]


def test_a_backbone_without_pretrained_weights_trains_whole_from_scratch(synthetic_dataset, pretrained):
    """Not a head on frozen random features: one phase in which every layer learns, batch-norm included."""
    import keras

    from clothclf.modeling.models import backbone_layers, build_model
    from clothclf.training.loop import _plan

    assert _plan(two_phase_config(synthetic_dataset, weights=None, epochs=3)) == (("train", 3),)
    assert _plan(two_phase_config(synthetic_dataset, weights=pretrained))[0] == ("head", 2)
    keras.utils.set_random_seed(0)
    model = build_model("mobilenet_v2", 3, image_size=32, weights=None)
    before = [w.copy() for w in backbone_layers(model).get_weights()]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    images = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3)).astype(np.float32)
    model.fit(images, np.arange(8) % 3, batch_size=8, epochs=1, verbose=0)
    after = backbone_layers(model).get_weights()
    changed = [not np.allclose(a, b) for a, b in zip(before, after, strict=True)]
    assert sum(changed) > 0.9 * len(changed), "the backbone's weights and batch-norm statistics must train"


def test_stop_event_cancels_and_saves_nothing(synthetic_dataset, tmp_path, pretrained):
    from clothclf.training.loop import TrainingCancelled, train

    stop = threading.Event()

    def hook(event):
        if event.phase == "head" and event.batch >= 1:
            stop.set()

    with pytest.raises(TrainingCancelled):
        config = two_phase_config(synthetic_dataset, weights=pretrained)
        train(config, tmp_path / "runs" / "x", progress=hook, stop=stop)
    assert not (tmp_path / "runs" / "x").exists()
    assert list((tmp_path / "runs").iterdir()) == []  # no partial folder left either
    assert list_runs(tmp_path / "runs") == []


def test_invalid_config_is_a_value_error(synthetic_dataset):
    from clothclf.training.loop import train

    with pytest.raises(ValueError, match="image_size"):
        train(two_phase_config(synthetic_dataset, image_size=8))


def test_mirrored_strategy_on_two_logical_cpus(synthetic_dataset, tmp_path):
    """MirroredStrategy over two logical CPU devices trains and saves a usable run (in a fresh process;
    the small CNN, trained whole: the strategy, not the backbone, is what is tested)."""
    script = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from clothclf.config import TrainConfig
from clothclf.training.distributed import make_strategy
from clothclf.training.loop import train
assert make_strategy("mirrored").num_replicas_in_sync == 2
r = train(TrainConfig(data_dir={str(synthetic_dataset)!r}, backbone="custom_cnn", weights=None, image_size=32, batch_size=8,
          epochs=2, strategy="mirrored"), {str(tmp_path / "m")!r})
print("EPOCHS", r.epochs)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "EPOCHS 2" in done.stdout
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["train"]["strategy"] == "mirrored"


def test_train_config_round_trip():
    config = TrainConfig(data_dir="x", augment=AugmentConfig(enabled=False), tta=True)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_paths_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOTHCLF_DATA_DIR", str(tmp_path / "d"))
    paths = Paths.from_env()
    assert paths.data_dir == tmp_path / "d"
    assert paths.default_dataset_dir == tmp_path / "d" / "clothing-dataset-small"
    (tmp_path / "d" / "train").mkdir(parents=True)
    assert Paths.from_env().default_dataset_dir == tmp_path / "d"
