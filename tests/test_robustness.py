"""Photo corruptions for the robustness check, and accuracies of a tiny served model under them."""

from __future__ import annotations

import numpy as np
from PIL import Image

from clothclf.evaluation.robustness import CORRUPTIONS, corrupted_pixels, robustness_accuracies


def _photo(width: int = 40, height: int = 30) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3)).astype(np.uint8))


def test_each_corruption_changes_the_photo_as_documented():
    photo = _photo()
    original = np.asarray(photo, np.float32)
    out = {name: fn(photo, np.random.default_rng(0)) for name, fn in CORRUPTIONS.items()}
    assert all(image.mode == "RGB" for image in out.values())
    assert out["rotate90"].size == (30, 40)
    assert out["crop60"].size == (24, 18)
    np.testing.assert_array_equal(np.asarray(out["crop60"]), np.asarray(photo)[6:24, 8:32])
    assert np.asarray(out["brighter"], np.float32).mean() > original.mean() > np.asarray(out["darker"]).mean()
    assert np.asarray(out["low_contrast"], np.float32).std() < original.std()
    assert np.asarray(out["high_contrast"], np.float32).std() > original.std()
    assert np.asarray(out["blur"], np.float32).std() < original.std()
    for name in ("noise", "jpeg20"):
        assert (
            out[name].size == photo.size and np.abs(np.asarray(out[name], np.float32) - original).mean() > 1
        )


def test_corrupted_pixels_are_decoded_at_the_size_and_reproducible(tmp_path):
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        _photo(40 + i, 30).save(files[-1])
    clean = corrupted_pixels(files, None, 16)
    assert clean.shape == (3, 16, 16, 3) and clean.dtype == np.uint8
    np.testing.assert_array_equal(corrupted_pixels(files, "noise", 16), corrupted_pixels(files, "noise", 16))
    assert not np.array_equal(corrupted_pixels(files, "noise", 16), clean)


def test_robustness_accuracies_of_a_served_model(tiny_run, synthetic_dataset):
    from clothclf.data.datasets import create_dataset
    from clothclf.serving.classifier import load_classifier

    test = create_dataset(synthetic_dataset, 42, 0.1, 0.1).split("test")
    classifier = load_classifier(tiny_run)
    result = robustness_accuracies(classifier, test.files, np.asarray(test.labels), ["darker", "rotate90"])
    assert list(result) == ["clean", "darker", "rotate90"]
    assert all(0.0 <= value <= 1.0 for value in result.values())
    probs = classifier.probabilities(corrupted_pixels(test.files, None, classifier.image_size))
    assert result["clean"] == float((probs.argmax(axis=1) == np.asarray(test.labels)).mean())
