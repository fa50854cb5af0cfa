"""Serving: LiteRT without TensorFlow, agreement with Keras, thread safety, batches, TTA and errors."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers import PROJECT_ROOT
from PIL import Image

from clothclf.config import Paths
from clothclf.data.datasets import create_dataset, decode_split
from clothclf.data.images import load_image
from clothclf.errors import InvalidImageError, RunError
from clothclf.runs import read_csv, read_json, record_model_digests
from clothclf.serving.classifier import Classifier, Prediction, load_classifier

ATOL = 1e-4  # LiteRT (XNNPACK) and TensorFlow sum in different orders; float32 noise is ~1e-6


def dataset_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.png"))


@pytest.fixture(scope="module")
def litert(tiny_run) -> Classifier:
    return load_classifier(tiny_run, backend="litert", pool_size=4)


@pytest.fixture(scope="module")
def keras_classifier(tiny_run) -> Classifier:
    return load_classifier(tiny_run, backend="keras")


def probabilities(classifier: Classifier, files) -> np.ndarray:
    return np.array(
        [[p.probabilities[c] for c in classifier.class_names] for p in classifier.predict_batch(files)]
    )


def test_litert_path_never_imports_tensorflow(tiny_run, synthetic_dataset):
    image = dataset_files(synthetic_dataset)[0]
    script = f"""
import json, sys
import clothclf
classifier = clothclf.load_classifier({str(tiny_run)!r})
prediction = classifier.predict({str(image)!r})
print(json.dumps({{
    "backend": classifier.backend,
    "label": prediction.label,
    "heavy": sorted({{m.split(".")[0] for m in sys.modules}} & {{"tensorflow", "keras", "tf_keras", "jax", "torch"}}),
    "litert": "ai_edge_litert.interpreter" in sys.modules,
}}))
"""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "litert" and result["litert"]
    assert result["heavy"] == []
    assert result["label"] in read_json(tiny_run / "class_names.json")


def test_backends_agree(litert, keras_classifier, synthetic_dataset):
    files = dataset_files(synthetic_dataset)
    lite, ref = probabilities(litert, files), probabilities(keras_classifier, files)
    assert litert.backend == "litert" and keras_classifier.backend == "keras"
    np.testing.assert_array_equal(lite.argmax(1), ref.argmax(1))
    np.testing.assert_allclose(lite, ref, atol=ATOL)
    np.testing.assert_allclose(lite.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["litert", "keras_classifier"])
def test_saved_model_reproduces_the_predictions_made_while_training(tiny_run, name, request):
    """``predictions_validation.csv`` was written by the in-memory model before it was saved."""
    classifier = request.getfixturevalue(name)
    root = Path(read_json(tiny_run / "config.json")["dataset"]["root"])
    rows = read_csv(tiny_run / "predictions_validation.csv")
    files = [root / row["file"] for row in rows]
    expected = np.array([[float(row[f"p_{c}"]) for c in classifier.class_names] for row in rows])
    np.testing.assert_allclose(
        probabilities(classifier, files), expected, atol=1e-6 if name == "keras_classifier" else ATOL
    )
    assert [p.label for p in classifier.predict_batch(files)] == [row["predicted"] for row in rows]


def test_decoding_is_the_one_training_used(litert, synthetic_dataset):
    split = create_dataset(synthetic_dataset, 0, 0.1, 0.1).split("validation")
    decoded = decode_split(split, litert.image_size)
    np.testing.assert_array_equal(decoded.images, np.stack([litert.load(f) for f in split.files]))


def test_concurrent_predictions_equal_serial_ones(litert, keras_classifier, synthetic_dataset):
    files = dataset_files(synthetic_dataset)[:40]
    for classifier in (litert, keras_classifier):
        serial = [classifier.predict(f) for f in files]
        with ThreadPoolExecutor(8) as pool:
            concurrent = list(pool.map(classifier.predict, files * 3))
        assert concurrent == serial * 3
    assert 1 <= litert._run.created <= 4  # the pool grew on demand, within its limit


def test_every_input_form_gives_the_same_prediction(litert, synthetic_dataset):
    path = dataset_files(synthetic_dataset)[0]
    expected = litert.predict(path)
    with path.open("rb") as handle, Image.open(path) as image:
        forms = [str(path), path.read_bytes(), handle, image, load_image(path), io.BytesIO(path.read_bytes())]
        assert [litert.predict(form) for form in forms] == [expected] * len(forms)


def test_batches_equal_single_predictions(litert, synthetic_dataset):
    files = dataset_files(synthetic_dataset)[:40]  # more than one chunk of 32
    assert litert.predict_batch(files) == [litert.predict(f) for f in files]
    assert litert.predict_batch([]) == [] and litert.try_predict_batch([]) == []


def test_try_predict_batch_reports_each_bad_image(litert, synthetic_dataset, tmp_path):
    good = dataset_files(synthetic_dataset)[:3]
    (tmp_path / "notes.jpg").write_text("not an image")
    inputs = [good[0], tmp_path / "notes.jpg", good[1], b"", tmp_path / "missing.png", good[2]]
    results = litert.try_predict_batch(inputs)
    assert [type(r) for r in results] == [Prediction, InvalidImageError] * 2 + [InvalidImageError, Prediction]
    assert [results[i] for i in (0, 2, 5)] == [litert.predict(f) for f in good]
    assert "notes.jpg" in str(results[1]) and "missing.png" in str(results[4])
    with pytest.raises(InvalidImageError, match="notes.jpg"):
        litert.predict_batch(inputs)


def test_prediction_fields(litert, synthetic_dataset):
    prediction = litert.predict(dataset_files(synthetic_dataset)[0], top_k=2)
    assert [name for name, _ in prediction.top_k] == sorted(
        prediction.probabilities, key=prediction.probabilities.get, reverse=True
    )[:2]
    assert (prediction.label, prediction.confidence) == prediction.top_k[0]
    assert set(prediction.probabilities) == set(litert.class_names)
    data = json.loads(json.dumps(prediction.to_dict()))
    assert data["label"] == prediction.answer and data["closest"] == prediction.label and len(data["top_k"]) == 2
    assert len(litert.predict(dataset_files(synthetic_dataset)[0], top_k=99).top_k) == len(litert.class_names)
    assert len(litert.predict(dataset_files(synthetic_dataset)[0], top_k=0).top_k) == 1


def test_tta_averages_the_mirror_image(tiny_run, litert, synthetic_dataset):
    assert litert.tta is bool(read_json(tiny_run / "run.json")["tta"])
    with_tta = load_classifier(tiny_run, tta=True)
    pixels = np.stack([litert.load(f) for f in dataset_files(synthetic_dataset)[:4]])
    expected = (litert.probabilities(pixels) + litert.probabilities(pixels[:, :, ::-1])) / 2
    np.testing.assert_allclose(with_tta.probabilities(pixels), expected, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        litert.probabilities(pixels[:, :8])


def test_default_model_comes_from_the_environment(tiny_run, monkeypatch):
    monkeypatch.setenv("CLOTHCLF_MODEL_DIR", str(tiny_run))
    assert load_classifier().model_dir == tiny_run


def test_keras_is_the_fallback_without_a_tflite_file(tiny_run, tmp_path):
    model_dir = shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("head.npz"))
    assert (model_dir / "features.tflite").is_file()  # half of a head-only run's LiteRT pair is not enough
    assert load_classifier(model_dir).backend == "keras"
    with pytest.raises(RunError, match="no model.tflite"):
        load_classifier(model_dir, backend="litert")


def test_bad_model_folders(tiny_run, tmp_path):
    with pytest.raises(RunError, match="not a clothclf model folder"):
        load_classifier(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="backend"):
        load_classifier(tiny_run, backend="onnx")
    model_dir = shutil.copytree(tiny_run, tmp_path / "run")
    # Each damaged file is vouched for (its digest recorded) to reach the loaders' own checks; a file whose
    # digest differs or is missing is refused before them (tests/test_run_schema.py, test_model_integrity.py).
    (model_dir / "class_names.json").write_text(json.dumps(["a", "b", "c", "d"]))
    with pytest.raises(RunError, match="3 outputs but class_names.json 4 classes"):
        load_classifier(model_dir)
    (model_dir / "class_names.json").write_text(json.dumps(["a", "b", "c"]))
    (model_dir / "model.tflite").write_bytes(b"not a flatbuffer" * 64)
    record_model_digests(model_dir)
    with pytest.raises(RunError, match="LiteRT cannot load it"):
        load_classifier(model_dir)
    (model_dir / "model.tflite").unlink()
    (model_dir / "head.npz").write_bytes(b"not an npz file")
    record_model_digests(model_dir)
    with pytest.raises(RunError, match="not a clothclf head"):
        load_classifier(model_dir)
    (model_dir / "class_names.json").write_text("{not json")
    with pytest.raises(RunError, match="class_names.json"):
        load_classifier(model_dir)
    for name in ("features.tflite", "head.npz", "model.keras"):
        (model_dir / name).unlink()
    (model_dir / "class_names.json").write_text(json.dumps(["a", "b", "c"]))
    with pytest.raises(RunError, match="no model"):
        load_classifier(model_dir)


@pytest.mark.slow
def test_shipped_model_backends_agree_on_the_test_split(shared_dataset):
    """The default model (``models/default``, or ``CLOTHCLF_MODEL_DIR``) on the 372 real test photos."""
    model_dir = Paths.from_env().default_model_dir
    for name in ("model.keras", "model.tflite"):
        if not (model_dir / name).is_file():
            pytest.skip(
                f"{model_dir / name} does not exist yet (the shipped model is trained by `clothclf train`)"
            )
    files = sorted((shared_dataset / "test").rglob("*.jpg"))
    assert len(files) == 372
    lite = probabilities(load_classifier(model_dir, backend="litert"), files)  # TTA as the run says
    ref = probabilities(load_classifier(model_dir, backend="keras"), files)
    np.testing.assert_array_equal(lite.argmax(1), ref.argmax(1))
    np.testing.assert_allclose(lite, ref, atol=ATOL)
