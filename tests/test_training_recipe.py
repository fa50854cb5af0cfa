"""Recipe levers of ``clothclf train`` on tiny models: optimizer, warm-up, weight EMA, starting from a run,
quarter turns, zoom-in, blur and MixUp augmentation."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_config

from clothclf.config import TrainConfig


def test_warmup_rises_linearly_then_cosine_decays_to_zero():
    from clothclf.training.loop import learning_rate

    config = TrainConfig(data_dir="", lr_schedule="cosine", warmup_epochs=1)
    schedule = learning_rate(config, 1e-3, epochs=4, steps=10)
    rates = [float(schedule(step)) for step in (0, 5, 10, 25, 40)]
    assert rates[0] == pytest.approx(0.0, abs=1e-9)
    assert rates[1] == pytest.approx(5e-4)  # halfway through the warm-up
    assert rates[2] == pytest.approx(1e-3)  # the peak
    assert rates[3] == pytest.approx(5e-4)  # halfway through the cosine
    assert rates[4] == pytest.approx(0.0, abs=1e-9)
    plateau = TrainConfig(data_dir="", lr_schedule="plateau")
    assert learning_rate(plateau, 1e-3, epochs=4, steps=10) == 1e-3  # plateau: constant


def test_optimizer_choice_weight_decay_and_ema():
    import keras

    from clothclf.training.loop import make_optimizer

    adamw = make_optimizer(TrainConfig(data_dir="", optimizer="adamw", weight_decay=0.05), 1e-3)
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == pytest.approx(0.05)
    adam = make_optimizer(TrainConfig(data_dir="", ema_momentum=0.9), 1e-3)
    assert type(adam) is keras.optimizers.Adam and adam.use_ema and adam.ema_momentum == 0.9
    assert not make_optimizer(TrainConfig(data_dir=""), 1e-3).use_ema


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(warmup_epochs=1, lr_schedule="plateau"), "warmup_epochs"),  # needs the cosine schedule
        (dict(weight_decay=0.01), "weight_decay"),  # needs adamw
        (dict(optimizer="sgd"), "optimizer"),
        (dict(ema_momentum=1.0), "ema_momentum"),
        (dict(quarter_turns=1.5), "quarter_turns"),
        (dict(zoom_in=1.0), "zoom_in"),
        (dict(blur=-0.1), "blur"),
        (dict(mixup=1.5), "mixup"),
    ],
)
def test_invalid_recipe_values_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(data_dir="", **changes).validate()


def test_ema_callbacks_leave_the_averaged_weights_in_the_model(tmp_path):
    """With an EMA of momentum ~1 the weights after fit stay near their start; without, they move.

    (Keras starts the average from the weights after the first step, so it moves by about one step.)"""
    import keras

    from clothclf.config import Paths
    from clothclf.training.loop import TrainingRun, _callbacks, make_optimizer

    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[(x[:, 0] > 0).astype(int)]

    def moved(ema_momentum: float) -> float:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        start = model.get_weights()
        config = TrainConfig(data_dir="", ema_momentum=ema_momentum)
        run = TrainingRun(config, Paths.from_env(), None, "", tmp_path, 0.0, (("head", 3),))
        model.compile(make_optimizer(config, 0.1), "categorical_crossentropy", metrics=["accuracy"])
        callbacks = _callbacks(run, "head")
        model.fit(x, y, validation_data=(x, y), epochs=3, batch_size=16, verbose=0, callbacks=callbacks)
        return max(float(np.abs(a - b).max()) for a, b in zip(start, model.get_weights()))

    assert moved(0.99999) < moved(0.0) / 4


def test_init_from_a_run_starts_from_its_weights(tiny_run, synthetic_dataset, tmp_path):
    """Only the fine-tuning phase runs, from the run's weights (kept by an EMA of momentum ~1)."""
    from clothclf.modeling.models import load_model
    from clothclf.runs import load_run
    from clothclf.training.loop import train

    recipe = dict(init_from=str(tiny_run), fine_tune_layers=20, fine_tune_epochs=1, ema_momentum=0.99999)
    run_dir = train(tiny_config(synthetic_dataset, **recipe), tmp_path / "run").run_dir
    assert [row["phase"] for row in load_run(run_dir).history()] == ["fine_tune"]
    start, end = (load_model(str(d / "model.keras")).get_weights() for d in (tiny_run, run_dir))
    assert max(float(np.abs(a - b).max()) for a, b in zip(start, end)) < 1e-3


def test_init_from_a_run_with_other_layers_is_refused(tiny_run, synthetic_dataset, tmp_path):
    from clothclf.errors import RunError
    from clothclf.training.loop import train

    config = tiny_config(synthetic_dataset, init_from=str(tiny_run), hidden_units=8)
    with pytest.raises(RunError, match="other layers"):
        train(config, tmp_path / "x")
    with pytest.raises(RunError, match="no model.keras"):
        train(tiny_config(synthetic_dataset, init_from=str(tmp_path)), tmp_path / "y")


def _only(**changes):
    """An augmentation config with every step of its own off (the levers under test are arguments)."""
    from clothclf.config import AugmentConfig

    off = dict(flip=False, rotation=0.0, zoom=0.0, translation=0.0, contrast=0.0, brightness=0.0)
    return AugmentConfig(**{**off, **changes})


def test_quarter_turns_turn_about_that_share_of_photos_either_way():
    from clothclf.data.pipeline import build_augmenter

    images = np.zeros((400, 8, 8, 3), np.float32)
    images[:, 0] = 255.0  # a white top row
    turned = np.asarray(build_augmenter(_only(), seed=3, quarter_turns=0.5)(images, training=True))
    top = (turned[:, 0, :, 0] == 255).all(axis=1)
    left, right = (turned[:, :, 0, 0] == 255).all(axis=1), (turned[:, :, -1, 0] == 255).all(axis=1)
    assert (top.astype(int) + left + right == 1).all()  # every image is upright or turned a quarter
    assert 0.4 < 1 - top.mean() < 0.6 and left.sum() > 50 and right.sum() > 50
    assert build_augmenter(_only(), quarter_turns=0.0) is None  # no step, no augmenter


def test_zoom_in_crops_towards_the_centre_never_out():
    from clothclf.data.pipeline import build_augmenter

    ramp = np.tile(np.linspace(0, 255, 32, dtype=np.float32)[None, :, None, None], (64, 1, 32, 3))
    zoomed = np.asarray(build_augmenter(_only(), seed=3, zoom_in=0.4)(ramp, training=True))
    column = zoomed[:, :, 16, 0]
    assert (np.diff(column, axis=1) >= -1e-3).all()  # still one ramp: zoomed in, never out (no reflection)
    top = column[:, 0]
    assert (top <= 255 * 0.2 + 1).all() and (top > 10).mean() > 0.5  # up to 40% in, most images a lot


def test_blur_spreads_a_point_over_its_neighbours_in_that_share_of_photos_keeping_its_light():
    from clothclf.data.pipeline import build_augmenter

    points = np.zeros((400, 16, 16, 3), np.float32)
    points[:, 8, 8] = 255.0
    blurred = np.asarray(build_augmenter(_only(), seed=3, blur=0.5)(points, training=True))
    changed = np.abs(blurred - points).max(axis=(1, 2, 3)) > 1e-3
    assert 0.4 < changed.mean() < 0.6
    np.testing.assert_allclose(blurred.sum(axis=(1, 2)), 255.0, atol=0.05)  # a blur moves light, never adds
    centre = blurred[changed][:, 8, 8, 0]
    assert (centre < 255 * 0.7).all() and (blurred[changed][:, 8, 9, 0] > 1).all()
    assert centre.min() < 20 and centre.max() > 100  # standard deviations from 0.5 to 2 px, not a narrow band


def test_blur_and_quarter_turns_pick_their_photos_independently():
    from clothclf.data.pipeline import build_augmenter

    points = np.zeros((400, 16, 16, 3), np.float32)
    points[:, 2, 8] = 255.0  # off-centre: a turn moves it, a blur spreads it
    augmented = np.asarray(
        build_augmenter(_only(), seed=3, quarter_turns=0.5, blur=0.5)(points, training=True)
    )
    turned = augmented[:, 2, 8, 0] < 1e-3
    blurred = np.isclose(augmented.max(axis=(1, 2, 3)), 255.0) == 0
    assert 0.35 < (turned & blurred).sum() / blurred.sum() < 0.65  # about half the blurred ones are turned


def test_the_cli_passes_the_augmentation_levers_to_the_config(tmp_path):
    from clothclf.cli import build_parser, train_config_from_args
    from clothclf.config import Paths

    args = build_parser().parse_args(
        ["train", "--data", str(tmp_path), "--quarter-turns", "0.2", "--zoom-in", "0.4", "--blur", "0.3"]
        + ["--mixup", "0.2"]
    )
    config = train_config_from_args(args, Paths.from_env())
    assert (config.quarter_turns, config.zoom_in, config.blur, config.mixup) == pytest.approx(
        (0.2, 0.4, 0.3, 0.2)
    )


def test_mixup_blends_images_labels_and_weights_alike_each_photo_staying_the_main_one():
    from clothclf.data.pipeline import mix_batch

    labels = np.arange(64) % 4
    images = np.broadcast_to((labels * 50.0)[:, None, None, None], (64, 4, 4, 3)).astype(np.float32)
    one_hot, weights = np.eye(4, dtype=np.float32)[labels], (labels + 1.0).astype(np.float32)
    x, y, w = (np.asarray(t) for t in mix_batch(images, (one_hot, weights), alpha=0.4, seed=7))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(x[:, 0, 0, 0], y @ (np.arange(4) * 50.0), rtol=1e-4)  # same blend as labels
    np.testing.assert_allclose(w, y @ np.arange(1.0, 5.0), rtol=1e-4)
    own = y[np.arange(64), labels]
    assert (own >= 0.5 - 1e-6).all() and (own < 0.99).sum() > 10  # blended, never outweighed


def test_mixup_reaches_the_fine_tuning_batches(tmp_path):
    from helpers import CLASSES, write_dataset

    from clothclf.data.datasets import Split
    from clothclf.data.pipeline import make_file_dataset

    write_dataset(tmp_path, {"": 4})
    files = sorted(tmp_path.glob("*/*.png"))
    split = Split(tuple(files), tuple(CLASSES.index(f.parent.name) for f in files))
    plain = next(iter(make_file_dataset(split, 16, len(CLASSES), 8)))[1].numpy()
    mixed = next(iter(make_file_dataset(split, 16, len(CLASSES), 8, mixup=0.4)))[1].numpy()
    assert set(np.unique(plain)) == {0.0, 1.0} and len(np.unique(mixed)) > 2
