"""``clothclf soup``: runs fine-tuned from one start, averaged weight by weight into a complete run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import tiny_config


@pytest.fixture(scope="module")
def fine_tuned(tiny_run, synthetic_dataset, tmp_path_factory):
    """A run fine-tuned for one epoch from ``tiny_run``: the same layers, other weights."""
    from clothclf.training.loop import train

    recipe = dict(
        init_from=str(tiny_run), fine_tune_layers=20, fine_tune_epochs=1, lr=1e-2, fine_tune_lr=1e-2
    )
    out = tmp_path_factory.mktemp("fine_tuned") / "ft"
    return train(tiny_config(synthetic_dataset, **recipe), out).run_dir


def test_soup_averages_the_weights_into_a_complete_run_that_serves(tiny_run, fine_tuned, tmp_path, capsys):
    from clothclf.cli import main
    from clothclf.modeling.models import load_model
    from clothclf.runs import load_run
    from clothclf.serving.classifier import load_classifier

    out = tmp_path / "soup"
    assert main(["soup", str(tiny_run), str(fine_tuned), "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_dir"] == str(out)
    a, b, soup = (load_model(str(d / "model.keras")).get_weights() for d in (tiny_run, fine_tuned, out))
    assert any(not np.allclose(x, y) for x, y in zip(a, b))
    for x, y, mean in zip(a, b, soup):
        np.testing.assert_allclose(mean, (x + y) / 2, rtol=1e-5, atol=1e-6)
    run = load_run(out)
    assert json.loads((out / "config.json").read_text())["soup_of"] == [tiny_run.name, fine_tuned.name]
    phases = {row["phase"] for row in run.history()}
    assert phases == {f"head ({tiny_run.name})", f"fine_tune ({fine_tuned.name})"}
    assert [int(row["epoch"]) for row in run.history()] == list(range(1, len(run.history()) + 1))
    assert len(run.predictions("validation")) == 12 and len(run.predictions("test")) == 12
    classifier = load_classifier(out)
    assert classifier.backend == "litert" and classifier.image_size == 32
    image = np.full((40, 30, 3), 128, np.uint8)
    assert classifier.predict(image).status in {"accept", "review", "unknown"}


def test_soup_refuses_one_run_and_runs_of_other_layers(tiny_run, synthetic_dataset, tmp_path):
    from clothclf.errors import RunError
    from clothclf.training.loop import train
    from clothclf.training.soup import average_runs

    with pytest.raises(RunError, match="at least two"):
        average_runs([tiny_run], tmp_path / "one")
    wider = train(tiny_config(synthetic_dataset, hidden_units=8, epochs=1), tmp_path / "wider").run_dir
    with pytest.raises(RunError, match="other layers"):
        average_runs([tiny_run, wider], tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()
