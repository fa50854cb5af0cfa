"""Weight averaging of runs (a "model soup", Wortsman et al. 2022): runs fine-tuned from the same start
(other seeds, augmentations or input sizes) averaged, weight by weight, into one model that costs what
one of them costs to serve. The result is saved, scored, calibrated and given trust scores as a
training run is (:func:`clothclf.training.loop.evaluate_and_save`)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clothclf.config import Paths, TrainConfig
from clothclf.data.datasets import create_dataset, dataset_fingerprint
from clothclf.errors import RunError
from clothclf.modeling.models import build_model, load_model
from clothclf.runs import CONFIG, KERAS_MODEL, atomic_run_dir, load_run, read_json, write_json
from clothclf.training.loop import TrainingRun, TrainResult, evaluate_and_save


def average_weights(run_dirs: Sequence[Path]) -> list[np.ndarray]:
    """The mean of the runs' ``model.keras`` weights, array by array (:class:`RunError` if their
    layers differ)."""
    weights = [load_model(str(Path(d) / KERAS_MODEL)).get_weights() for d in run_dirs]
    shapes = [w.shape for w in weights[0]]
    for run_dir, other in zip(run_dirs[1:], weights[1:]):
        if [w.shape for w in other] != shapes:
            raise RunError(f"{run_dir}: its model has other layers than {run_dirs[0]}'s")
    return [np.mean(arrays, axis=0).astype(arrays[0].dtype) for arrays in zip(*weights)]


def _soup_history(run_dirs: Sequence[Path]) -> list[dict]:
    """The ingredients' histories one after another, each phase named after its run, epochs counted on."""
    rows = []
    for run_dir in run_dirs:
        for row in load_run(run_dir).history():
            rows.append({**row, "phase": f"{row['phase']} ({Path(run_dir).name})", "epoch": len(rows) + 1})
    return rows


def _soup_config(first: Path, data_dir: str | Path | None, paths: Paths) -> TrainConfig:
    """The first run's training config, on ``data_dir`` (default: the run's dataset, else the default)."""
    config = TrainConfig.from_dict(read_json(first / CONFIG)["train"])
    data = data_dir or config.data_dir or paths.default_dataset_dir
    return dataclasses.replace(config, data_dir=str(data))


def average_runs(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    paths: Paths | None = None,
) -> TrainResult:
    """Average the weights of ``run_dirs`` (same backbone, head and classes) into a run folder at
    ``out_dir``, built as the first run's config says (its image size); ``config.json`` names the
    ingredients (``soup_of``). Validation and test are scored on the dataset of the first run."""
    started, paths = time.monotonic(), paths or Paths.from_env()
    run_dirs = [Path(d) for d in run_dirs]
    if len(run_dirs) < 2:
        raise RunError("averaging needs at least two runs")
    class_names = load_run(run_dirs[0]).class_names()
    for run_dir in run_dirs[1:]:
        if load_run(run_dir).class_names() != class_names:
            raise RunError(f"{run_dir}: its classes differ from {run_dirs[0]}'s")
    config = _soup_config(run_dirs[0], data_dir, paths)
    dataset = create_dataset(config.data_dir, config.seed, config.val_fraction, config.test_fraction)
    if list(dataset.class_names) != list(class_names):
        raise RunError(f"{config.data_dir}: its classes differ from the runs' ({', '.join(class_names)})")
    model = build_model(
        config.backbone, len(class_names), config.image_size, None, config.dropout, config.hidden_units
    )
    model.set_weights(average_weights(run_dirs))
    history = _soup_history(run_dirs)
    with atomic_run_dir(out_dir) as work:
        run = TrainingRun(
            config, paths, dataset, dataset_fingerprint(dataset), work, started, (), history=history
        )
        metrics, digest = evaluate_and_save(run, model, None)
        write_json(work / CONFIG, {**read_json(work / CONFIG), "soup_of": [d.name for d in run_dirs]})
    best = max((float(r.get("val_accuracy", 0.0)) for r in history), default=0.0)
    return TrainResult(
        Path(out_dir), metrics["accuracy"], best, len(history), time.monotonic() - started, digest
    )
