"""Ensembles: trained runs combined into one model, so serving (one LiteRT file) does not change.

The members share one input size; the ensemble's output is the mean of their probabilities. The run folder it
writes is an ordinary fine-tuned run (``model.keras``, ``model.tflite``, validation predictions, a
temperature fitted on them), and its ``config.json`` names the members and their recipes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import keras

from clothclf.config import Paths, TrainConfig
from clothclf.data.datasets import create_dataset, dataset_fingerprint
from clothclf.errors import RunError
from clothclf.modeling.models import load_model
from clothclf.runs import atomic_run_dir, read_json
from clothclf.training.loop import TrainingRun, save, score


def build_ensemble(members: Sequence[keras.Model]) -> keras.Model:
    """One model averaging the probabilities of ``members`` (raw pixels in, like every clothclf model)."""
    sizes = {int(m.input_shape[1]) for m in members}
    if len(sizes) != 1:
        raise RunError(f"the members of an ensemble must share one image size, not {sorted(sizes)}")
    size = sizes.pop()
    pixels = keras.Input((size, size, 3), name="pixels")
    outputs = [
        keras.Model(m.inputs[0], m.outputs[0], name=f"member_{i}")(pixels) for i, m in enumerate(members)
    ]
    probs = keras.layers.Average(name="probabilities")(outputs) if len(outputs) > 1 else outputs[0]
    return keras.Model(pixels, probs, name="clothclf_ensemble")


def _member(run_dir: Path) -> tuple[keras.Model, dict]:
    if not (run_dir / "model.keras").is_file() or not (run_dir / "config.json").is_file():
        raise RunError(f"{run_dir}: an ensemble member needs model.keras and config.json")
    return load_model(str(run_dir / "model.keras")), read_json(run_dir / "config.json")


def ensemble_runs(
    run_dirs: Sequence[str | Path], out_dir: str | Path, data_dir: str | Path, paths: Paths | None = None
) -> Path:
    """Combine trained runs (same classes) into one ensemble run folder at ``out_dir``."""
    started = time.monotonic()
    members = [_member(Path(d)) for d in run_dirs]
    if len({tuple(config["dataset"]["class_names"]) for _, config in members}) != 1:
        raise RunError("the members do not predict the same classes")
    model = build_ensemble([m for m, _ in members])
    first = members[0][1]["train"]
    config = TrainConfig.from_dict({**first, "data_dir": str(data_dir), "image_size": model.input_shape[1]})
    dataset = create_dataset(config.data_dir, config.seed, config.val_fraction, config.test_fraction)
    recipes = tuple({"run": Path(d).name, **c["train"]} for d, (_, c) in zip(run_dirs, members))
    with atomic_run_dir(out_dir) as work:
        run = TrainingRun(
            config,
            paths or Paths.from_env(),
            dataset,
            dataset_fingerprint(dataset),
            work,
            started,
            (),
            members=recipes,
        )
        save(run, model, *score(run, model, None))
    return Path(out_dir)
