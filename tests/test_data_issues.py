"""The data-issue finder on a tiny synthetic dataset with label flips and copies it plants itself."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import CLASSES, write_dataset
from PIL import Image

from clothclf.app.issues_process import issues_in_child
from clothclf.cli import main
from clothclf.config import Paths
from clothclf.data.datasets import Dataset, create_dataset, dataset_fingerprint, decode_split
from clothclf.data.features import Features
from clothclf.errors import ClothclfError
from clothclf.evaluation.data_issues import (
    DataIssues,
    IssueSettings,
    dataset_issues,
    embedding_map,
    find_issues,
    format_issues,
)

FLIPS = ("train/red/red_3.png", "train/green/green_5.png", "train/blue/blue_7.png")


def synthetic_features(dataset: Dataset) -> dict[str, Features]:
    """A small feature model of the helpers' images: the mean colour (the class) plus the photo's own
    noise pattern (4 px blocks, mean removed), weighted so two photos of a class are about half alike."""
    projection = np.random.default_rng(7).normal(size=(6 * 6 * 3, 12))
    found = {}
    for split in ("train", "validation", "test"):
        decoded = decode_split(dataset.split(split), 24)
        pixels = decoded.images.astype(np.float32)
        means = pixels.mean(axis=(1, 2))
        blocks = pixels.reshape(len(pixels), 6, 4, 6, 4, 3).mean(axis=(2, 4))
        pattern = (blocks - means[:, None, None, :]).reshape(len(pixels), -1) @ projection
        features = np.concatenate([np.repeat(means, 4, axis=1), pattern * 3], axis=1).astype(np.float32)
        files = tuple(p.relative_to(dataset.root).as_posix() for p in decoded.files)
        found[split] = Features(features, decoded.labels, files)
    return found


@pytest.fixture
def planted(tmp_path) -> tuple[Path, dict[str, str]]:
    """A dataset with three training photos moved into another class's folder and four training
    photos copied into test: one byte for byte, three re-encoded as JPEG, one of those also resized."""
    root = write_dataset(tmp_path / "ds", {"train": 20, "validation": 6, "test": 6})
    for flip in FLIPS:
        source = root / flip
        other = CLASSES[(CLASSES.index(source.parent.name) + 1) % 3]
        source.rename(root / "train" / other / source.name)
    copies = {"test/red/copy_exact.png": "train/red/red_10.png"}
    shutil.copyfile(root / copies["test/red/copy_exact.png"], root / "test/red/copy_exact.png")
    for name, size in (("red_11", 24), ("green_12", 24), ("blue_13", 30)):
        source = f"train/{name.split('_')[0]}/{name}.png"
        target = f"test/{name.split('_')[0]}/copy_{name}.jpg"
        Image.open(root / source).resize((size, size)).save(root / target, quality=95)
        copies[target] = source
    return root, copies


def flipped_files() -> set[str]:
    moved = set()
    for flip in FLIPS:
        name = Path(flip).name
        other = CLASSES[(CLASSES.index(name.split("_")[0]) + 1) % 3]
        moved.add(f"train/{other}/{name}")
    return moved


def test_planted_flips_rank_first_and_copies_are_found_as_leaks(planted):
    root, copies = planted
    dataset = create_dataset(root)
    seen = []
    issues = find_issues(dataset, synthetic_features(dataset), progress=lambda d, w: seen.append(d))
    top = {i.file for i in issues.label_issues[: 2 * len(FLIPS)]}
    assert flipped_files() <= top
    suggested = {i.file: i.suggested for i in issues.label_issues}
    assert {suggested[f] for f in flipped_files()} == {Path(f).name.split("_")[0] for f in flipped_files()}
    for copy, source in copies.items():
        assert any({copy, source} <= set(group.files) and group.leak for group in issues.duplicates), copy
    assert issues.duplicates[0].leak and issues.duplicates[0].similarity == 1.0  # the byte copy, first
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_the_json_has_the_issue_s_shape_and_relative_files(planted):
    root, _ = planted
    dataset = create_dataset(root)
    data = find_issues(dataset, synthetic_features(dataset)).to_json()
    assert set(data) == {"label_issues", "duplicates", "outliers"}
    assert set(data["label_issues"][0]) == {"file", "split", "given", "suggested", "score"}
    assert set(data["duplicates"][0]) == {"files", "splits", "similarity"}
    assert all((root / row["file"]).is_file() for row in data["label_issues"])
    assert json.loads(json.dumps(data)) == data


def test_an_odd_photo_is_an_outlier(planted):
    root, _ = planted
    Image.fromarray(np.full((24, 24, 3), 255, np.uint8)).save(root / "train/red/white.png")
    dataset = create_dataset(root)
    issues = find_issues(dataset, synthetic_features(dataset), IssueSettings(outlier_share=0.001))
    assert issues.outliers[0].file == "train/red/white.png"


def test_summary_and_map_of_a_tiny_case(planted):
    root, _ = planted
    dataset = create_dataset(root)
    features = synthetic_features(dataset)
    issues = find_issues(dataset, features)
    text = format_issues(issues, top=3)
    assert text.startswith(f"{issues.photos} photos: {len(issues.label_issues)} label issues")
    assert "[leak]" in text
    assert embedding_map(features["train"].features).shape == (60, 2)
    assert find_issues(dataset, {}) == DataIssues((), (), (), 0)


def test_cli_data_issues_with_a_run_s_frozen_extractor(planted, tiny_run, tmp_path, capsys):
    root, copies = planted
    out = tmp_path / "issues.json"
    assert (
        main(["data", "issues", "--data", str(root), "--model", str(tiny_run), "--json", "--out", str(out)])
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    groups = [set(d["files"]) for d in printed["duplicates"]]
    assert any({"test/red/copy_exact.png", copies["test/red/copy_exact.png"]} <= g for g in groups)
    assert main(["data", "issues", "--data", str(root), "--model", str(tiny_run)]) == 0
    assert "label issues" in capsys.readouterr().out


def test_the_child_process_finds_what_the_finder_finds_and_its_caller_never_imports_tensorflow(
    planted, tiny_run
):
    root, _ = planted
    script = (
        "import json, sys\n"
        "from clothclf.app.issues_process import issues_in_child\n"
        "from clothclf.config import Paths\n"
        "from clothclf.data.datasets import create_dataset, dataset_fingerprint\n"
        f"root = {str(root)!r}\n"
        "seen = []\n"
        "issues, photos = issues_in_child(root, dataset_fingerprint(create_dataset(root)), "
        f"{str(tiny_run)!r}, Paths.from_env(), lambda done, what: seen.append(done))\n"
        "print(json.dumps({'issues': issues.to_json(), 'suggested': issues.suggested, 'files': photos.files,\n"
        "    'xy': photos.xy.shape, 'progress': [seen[0], seen[-1]],\n"
        "    'imported': sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    child = json.loads(done.stdout.strip().splitlines()[-1])
    assert child["imported"] == []
    here, pooled = dataset_issues(create_dataset(root), tiny_run, Paths.from_env())
    assert child["issues"] == json.loads(json.dumps(here.to_json()))
    assert child["suggested"] == here.suggested and child["files"] == list(pooled.files)
    assert child["xy"] == [len(pooled.files), 2] and child["progress"] == [0.0, 1.0]


def test_the_child_process_s_errors_come_back_as_one_sentence(planted, tiny_run, tmp_path):
    root, _ = planted
    fingerprint = dataset_fingerprint(create_dataset(root))
    with pytest.raises(ClothclfError, match=r"changed while it was being looked at; look again$"):
        issues_in_child(root, "0" * 32, tiny_run, Paths.from_env())
    with pytest.raises(ClothclfError, match=str(tmp_path / "no-model")):
        issues_in_child(root, fingerprint, tmp_path / "no-model", Paths.from_env())


def test_a_child_process_killed_on_the_way_is_one_sentence(planted, tmp_path, monkeypatch):
    root, _ = planted
    oom = tmp_path / "python-killed-by-the-oom-killer"
    oom.write_text("#!/bin/sh\nkill -9 $$\n")
    oom.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(oom))
    with pytest.raises(
        ClothclfError, match=r"killed by SIGKILL \(most likely it ran out of memory\); try again$"
    ):
        issues_in_child(root, "0" * 32, None, Paths.from_env())
