"""The light install: the wheel, installed without extras in a fresh venv, serves the shipped model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import PROJECT_ROOT, make_image

from clothclf.config import Paths

#: What building the wheel reads from the project (a copy, so no stale ``build/`` leaks in).
SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "src/clothclf", "models/default")
VENV_LIMIT_MB = 400


def run(*args: str | Path, cwd: Path | None = None, status: int = 0) -> subprocess.CompletedProcess:
    """Run a command outside the project: nothing points at it (an importable checkout would mask the wheel)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CLOTHCLF_MODEL_DIR")}
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env
    )
    assert result.returncode == status, result.stderr[-2000:]
    return result


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    for name in SOURCES:
        origin, target = PROJECT_ROOT / name, source / name
        if origin.is_dir():
            shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.keras"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(origin, target)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", source)
    (wheel,) = (tmp_path / "dist").glob("clothclf-*.whl")
    return wheel


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def test_default_model_is_the_projects_else_the_packaged_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("CLOTHCLF_MODEL_DIR", raising=False)
    assert Paths.from_env().default_model_dir == PROJECT_ROOT / "models" / "default"
    monkeypatch.setattr(
        "clothclf.config.__file__", str(tmp_path / "site-packages" / "clothclf" / "config.py")
    )
    assert Paths.from_env().default_model_dir == tmp_path / "site-packages" / "clothclf" / "default_model"


@pytest.mark.slow
def test_wheel_without_extras_classifies_in_a_fresh_venv(tmp_path):
    wheel = build_wheel(tmp_path)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel)
    photo = tmp_path / "photo.png"
    make_image(0, np.random.default_rng(0), size=32).save(photo)
    cli = run(venv / "bin" / "clothclf", "predict", "--json", photo, cwd=tmp_path)
    code = (
        "import importlib.util, json, sys, clothclf\n"
        "classifier = clothclf.load_classifier()\n"
        f"prediction = classifier.predict({str(photo)!r})\n"
        "print(json.dumps({'model_dir': str(classifier.model_dir), 'label': prediction.label,"
        " 'installed': [m for m in ('tensorflow', 'keras', 'streamlit') if importlib.util.find_spec(m)]}))\n"
    )
    library = json.loads(run(python, "-c", code, cwd=tmp_path).stdout)
    train = run(venv / "bin" / "clothclf", "train", "--head-only", cwd=tmp_path, status=1)

    class_names = json.loads((PROJECT_ROOT / "models" / "default" / "class_names.json").read_text())
    answer = json.loads(cli.stdout)
    assert answer["closest"] in class_names and answer["label"] in [*class_names, "unknown"]
    assert library["label"] == answer["closest"]  # Prediction.label is the closest class; "unknown" is its answer
    assert Path(library["model_dir"]).is_relative_to(venv)  # the packaged copy of models/default
    assert not (Path(library["model_dir"]) / "model.keras").exists()
    assert library["installed"] == []
    assert "pip install 'clothclf[train]'" in train.stderr
    assert folder_mb(venv) <= VENV_LIMIT_MB
