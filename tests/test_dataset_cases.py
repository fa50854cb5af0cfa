"""Datasets the way shops bring them (issue 15): one zip per case, built here, with its expected outcome.

Each case is a zip made the way people make them, and what clothclf must do with it: read it right
(classes, photos per split, what was skipped and why) or refuse it with one plain sentence before
anything runs. The cases go through the reader, ``clothclf data check`` and the Fine-tune page's
check; the accepted ones also train (tiny head-only runs) through ``clothclf train``.
"""

from __future__ import annotations

import io
import json
import os
import re
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import noisy_png
from test_app_finetune import fine_tune_page

from clothclf.app.jobs import JOBS_DIR, JobStatus
from clothclf.app.training_data import extract_uploaded_dataset, prune_uploads, uploads_dir
from clothclf.cli import main as cli
from clothclf.config import Paths
from clothclf.data.archives import safe_extract_zip
from clothclf.data.datasets import create_dataset
from clothclf.data.report import DatasetReport, build_report, format_report
from clothclf.errors import DatasetError
from clothclf.runs import write_json

CORRUPT = b"\xff\xd8\xff\xe0 this photo was cut off while copying"


def photo(channel: int, seed: int) -> bytes:
    """A 24 px PNG whose dominant colour is ``channel`` (learnable in a few epochs)."""
    return noisy_png(channel % 3, seed)


def photos(prefix: str, count: int, channel: int, ext: str = "png", data: bytes | None = None) -> list:
    """``count`` entries ``prefix/<i>.<ext>``: distinct photos, or ``data`` for every one."""
    seed = zlib.crc32(prefix.encode())
    return [(f"{prefix}/{i}.{ext}", photo(channel, seed + i) if data is None else data) for i in range(count)]


class FinderZipInfo(zipfile.ZipInfo):
    """An entry as macOS's Finder writes it: the name's UTF-8 bytes without the zip's UTF-8 flag."""

    def _encodeFilenameFlags(self):  # noqa: N802 - zipfile's name
        return self.filename.encode("utf-8"), self.flag_bits & ~0x800


def zip_bytes(entries: list[tuple[str, bytes]], finder: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries:
            info = FinderZipInfo(name) if finder else zipfile.ZipInfo(name)
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


@dataclass(frozen=True)
class Case:
    """A zip and its expected outcome: ``refused`` (a regex of the sentence) or classes and counts."""

    name: str
    entries: list[tuple[str, bytes]]
    classes: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)  # photos per split
    skipped: tuple[str, ...] = ()  # paths listed as skipped
    refused: str = ""
    finder: bool = False

    @property
    def zip(self) -> bytes:
        return zip_bytes(self.entries, self.finder)


def _cases() -> list[Case]:
    return [
        Case(
            "Train and Test folders, capitalised",
            photos("Train/jeans", 12, 0)
            + photos("Train/trousers", 12, 1)
            + photos("Test/jeans", 3, 0)
            + photos("Test/trousers", 3, 1),
            classes=("jeans", "trousers"),
            counts={"train": 18, "validation": 6, "test": 6},
        ),
        Case(
            "training_set and test_set, as the cats-vs-dogs zip (each wrapped in a folder of its name)",
            photos("training_set/training_set/cats", 10, 0)
            + photos("training_set/training_set/dogs", 10, 1)
            + photos("test_set/test_set/cats", 3, 0)
            + photos("test_set/test_set/dogs", 3, 1),
            classes=("cats", "dogs"),
            counts={"train": 16, "validation": 4, "test": 6},
        ),
        Case(
            "macOS Finder zip: UTF-8 NFD names without the UTF-8 flag, __MACOSX and .DS_Store",
            photos(nfd("Photos/chemisé"), 8, 0)
            + photos(nfd("Photos/pantalón"), 8, 1)
            + [("Photos/.DS_Store", b"finder"), (nfd("__MACOSX/Photos/chemisé/._0.png"), b"fork")],
            classes=("chemisé", "pantalón"),
            counts={"train": 10, "validation": 4, "test": 2},
            skipped=("Photos/.DS_Store", "__MACOSX/"),
            finder=True,
        ),
        Case(
            "the same class written NFD in train and NFC in validation",
            photos(nfd("train/chemisé"), 6, 0)
            + photos("train/jupe", 6, 1)
            + photos("validation/chemisé", 2, 0)
            + photos("validation/jupe", 2, 1),
            classes=("chemisé", "jupe"),
            counts={"train": 12, "validation": 4},
        ),
        Case(
            "folders starting with _ or . beside the classes",
            photos("shirt", 6, 0)
            + photos("pants", 6, 1)
            + photos("_drafts", 3, 2)
            + photos(".thumbnails", 3, 2),
            classes=("pants", "shirt"),
            counts={"train": 6, "validation": 4, "test": 2},
            skipped=("_drafts/", ".thumbnails/"),
        ),
        Case(
            "a class whose photos are all unreadable",
            photos("shirt", 6, 0) + photos("pants", 6, 1) + photos("socks", 6, 2, "jpg", CORRUPT),
            refused=r"^class 'socks' has no readable photo: all 6 of its files failed to decode",
        ),
        Case(
            "two entries with the same name",
            photos("shirt", 6, 0) + photos("pants", 6, 1) + [("shirt/0.png", photo(2, 99))],
            refused=r"^the zip holds two files named 'shirt/0.png'; one would overwrite the other",
        ),
        Case(
            "shirt and Shirt",
            photos("shirt", 6, 0) + photos("Shirt", 6, 0) + photos("pants", 6, 1),
            refused=r"^class folders 'Shirt' and 'shirt' differ only by upper/lower case",
        ),
        Case(
            "every photo corrupt, in train and validation folders",
            photos("train/shirt", 6, 0, "jpg", CORRUPT)
            + photos("train/pants", 6, 1, "jpg", CORRUPT)
            + photos("validation/shirt", 2, 0, "jpg", CORRUPT)
            + photos("validation/pants", 2, 1, "jpg", CORRUPT),
            refused=r"^none of the 16 photos can be read \(for example ",
        ),
        Case(
            "a single class in train and validation folders",
            photos("train/shirt", 6, 0) + photos("validation/shirt", 2, 0),
            refused=r"^a dataset needs at least two classes \(folders of photos\); it has only 'shirt'$",
        ),
        Case(
            "a wrapper folder with a stray cover photo",
            [("shop/cover.jpg", photo(2, 7))] + photos("shop/shirt", 6, 0) + photos("shop/pants", 6, 1),
            classes=("pants", "shirt"),
            counts={"train": 6, "validation": 4, "test": 2},
            skipped=("shop/cover.jpg",),
        ),
        Case(
            "HEIC photos only",
            photos("shirt", 6, 0, "heic", b"ftypheic") + photos("pants", 6, 1, "HEIC", b"ftypheic"),
            refused=r"^the dataset holds no photo clothclf can read \(12 files: HEIC photo: .*convert it to JPEG\)$",
        ),
        Case(
            "200 classes of 4 photos",
            [entry for c in range(200) for entry in photos(f"item-{c:03d}", 4, c, data=photo(c, c))],
            refused=r"^each class needs at least 5 photos \(3 to train, 2 to validate\); 200 of 200 classes "
            r"have fewer: item-000 \(4\), ",
        ),
        Case(
            "a file and a folder with one name",
            [("shirt", b"a file")] + photos("shirt", 6, 0) + photos("pants", 6, 1),
            refused=r"^the zip holds a file 'shirt' and a folder of the same name",
        ),
        Case(
            "160 photos in four class folders",
            [e for c, name in enumerate(("jeans", "chinos", "shorts", "skirt")) for e in photos(name, 40, c)],
            classes=("chinos", "jeans", "shorts", "skirt"),
            counts={"train": 104, "validation": 40, "test": 16},
        ),
    ]


CASES = _cases()
ACCEPTED = [c for c in CASES if not c.refused]
ids = [c.name for c in CASES]


def read_case(case: Case, folder: Path) -> DatasetReport:
    """The reader's path: extract, read the layout, report; refusals raise DatasetError."""
    extracted = safe_extract_zip(io.BytesIO(case.zip), folder / "extracted")
    report = build_report(create_dataset(extracted))
    report.raise_if_refused()
    return report


def check_accepted(case: Case, report: dict) -> None:
    assert tuple(report["class_names"]) == case.classes
    counts = {split: sum(by_class.values()) for split, by_class in report["counts"].items()}
    assert counts == case.counts
    assert all(n >= 2 for n in report["counts"]["validation"].values()), "photos of every class in validation"
    listed = {s["path"] for s in report["skipped"]}
    assert set(case.skipped) <= listed, listed
    assert all(s["reason"] for s in report["skipped"])


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_the_reader_reads_or_refuses_each_case(case, tmp_path):
    if case.refused:
        with pytest.raises(DatasetError, match=case.refused) as refusal:
            read_case(case, tmp_path)
        assert str(tmp_path) not in str(refusal.value) and "partial" not in str(refusal.value)
    else:
        check_accepted(case, read_case(case, tmp_path).to_dict())


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_clothclf_data_check_reads_or_refuses_each_zip(case, tmp_path, capsys):
    archive = tmp_path / "dataset.zip"
    archive.write_bytes(case.zip)
    status = cli(["data", "check", str(archive), "--json"])
    out, err = capsys.readouterr()
    if case.refused:
        assert status == 1
        message = err.strip().removeprefix("clothclf: error: ")
        assert "\n" not in message and re.search(case.refused, message), message
    else:
        assert status == 0, err
        check_accepted(case, json.loads(out))
    assert [p.name for p in tmp_path.iterdir()] == ["dataset.zip"], "nothing left beside the zip"


def run_cli_training(folder: Path, out: Path, capsys) -> dict:
    """``clothclf train`` in this process with the tiny settings of helpers.tiny_config."""
    args = ["train", "--data", str(folder), "--out", str(out), "--weights", "none", "--image-size", "32"]
    args += ["--backbone", "mobilenet_v2"]
    args += ["--batch-size", "8", "--epochs", "2", "--lr", "1e-2", "--head-only", "--json"]
    status = cli(args)
    out_text, err = capsys.readouterr()
    assert status == 0, err
    return json.loads(out_text.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.name for c in ACCEPTED])
def test_clothclf_train_trains_each_accepted_zip_as_read(case, tmp_path, capsys):
    folder = safe_extract_zip(io.BytesIO(case.zip), tmp_path / "extracted")
    summary = run_cli_training(folder, tmp_path / "run", capsys)
    run = Path(summary["run_dir"])
    assert json.loads((run / "class_names.json").read_text()) == list(case.classes)
    config = json.loads((run / "config.json").read_text())
    assert {k: v for k, v in config["dataset"]["sizes"].items() if v} == case.counts
    test_metrics = run / "metrics_test.json"
    assert test_metrics.is_file() == bool(case.counts.get("test")), "the dataset's test part is evaluated"
    if case.counts.get("test"):
        assert json.loads(test_metrics.read_text())["n_images"] == case.counts["test"]


@pytest.fixture
def page(current_model, no_cached_weights):
    """The Fine-tune page of a fresh session (stand-in current model, empty Keras cache)."""
    return fine_tune_page()


def check_on_page(at, data: bytes):
    at.file_uploader(key="ft_upload").set_value(("dataset.zip", data, "application/zip"))
    return at.button(key="ft_check").click().run()


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_the_fine_tune_page_checks_each_zip(case, page, tmp_path):
    at = check_on_page(page, case.zip)
    assert not at.exception
    paths = Paths.from_env()
    if case.refused:
        assert len(at.error) == 1 and re.search(case.refused, at.error[0].value), at.error[0].value
        assert not any(uploads_dir(paths).glob("*")), "a refused upload is deleted at once"
    else:
        assert not at.error, at.error[0].value
        counts = at.dataframe[0].value
        assert tuple(counts["class"]) == case.classes
        assert {split: int(counts[split].sum()) for split in counts.columns[1:]} == case.counts
        if case.skipped:
            listed = set(at.dataframe[1].value["path"])
            assert set(case.skipped) <= listed, listed
        assert len(list(uploads_dir(paths).iterdir())) == 1
    assert not (tmp_path / "data").exists(), "uploads never land in the data folder"


def test_a_checked_zip_is_extracted_once_and_reused_by_start(page, synthetic_dataset):
    case = next(c for c in CASES if c.finder)
    at = check_on_page(page, case.zip)
    [folder] = uploads_dir(Paths.from_env()).iterdir()
    marker = folder / "marker"
    marker.write_text("extracted once")
    at.button(key="ft_check").click().run()
    assert marker.is_file() and list(uploads_dir(Paths.from_env()).iterdir()) == [folder]


def test_unused_uploads_are_kept_up_to_the_cap_least_recently_used_first(tmp_path):
    paths = Paths.from_env()
    folders = []
    for i, case in enumerate(CASES[:3]):
        folder = extract_uploaded_dataset(io.BytesIO(case.zip), paths)
        os.utime(folder, (1000 + i, 1000 + i))  # extracted in this order, none used since
        folders.append(folder)
    assert extract_uploaded_dataset(io.BytesIO(CASES[0].zip), paths) == folders[0]  # same content: reused
    sizes = [sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) for folder in folders]
    deleted = prune_uploads(paths, keep_bytes=sizes[0] + sizes[1], in_use=folders[1] / "Train")
    assert deleted == [folders[2]], "the least recently used goes first, never the one a run uses"
    assert prune_uploads(paths, keep_bytes=0) == [folders[1], folders[0]]
    assert not any(uploads_dir(paths).iterdir())


def test_a_class_missing_from_validation_is_named(tmp_path):
    root = tmp_path / "ds"
    for name, data in photos("train/dress", 6, 0) + photos("train/hat", 6, 1) + photos("train/shoes", 6, 2):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    for name, data in photos("validation/dress", 2, 0) + photos("validation/hat", 2, 1):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    report = build_report(create_dataset(root))
    assert report.ok and report.unvalidated == ("shoes",)
    assert "no validation photos of: shoes" in format_report(report)


def test_clothclf_data_check_prints_a_readable_report(tmp_path, capsys):
    case = next(c for c in CASES if c.finder)
    archive = tmp_path / "boutique.zip"
    archive.write_bytes(case.zip)
    assert cli(["data", "check", str(archive)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("(one folder of class folders, split by clothclf)")
    assert lines[1].split() == ["class", "train", "validation", "test"]
    assert lines[2].split() == ["chemisé", "5", "2", "1"] and lines[4].split() == ["total", "10", "4", "2"]
    assert "  __MACOSX/: macOS metadata folder" in lines
    assert any(line.startswith("tiny photos (under 64 px on a side): 16") for line in lines)


def finished_job(paths: Paths, classes: list[str], test: dict | None) -> Path:
    """A finished job and its run on disk, as the worker leaves them (placeholder model bytes)."""
    run = paths.runs_dir / "20300101-000000-shop"
    run.mkdir(parents=True)
    (run / "model.tflite").write_bytes(b"placeholder")
    write_json(run / "class_names.json", classes)
    write_json(run / "metrics_validation.json", {"accuracy": 0.75, "macro_f1": 0.7, "n_images": 40})
    if test:
        write_json(run / "metrics_test.json", test)
    write_json(run / "run.json", {"name": run.name, "status": "complete", "image_size": 32})
    job = paths.runs_dir / JOBS_DIR / "20300101-000000-abc123"
    job.mkdir(parents=True)
    write_json(job / "request.json", {"config": {"data_dir": "x"}, "run_dir": str(run), "started": ""})
    status = JobStatus(job.name, "finished", phase="done", fraction=1.0, run_dir=str(run))
    write_json(job / "status.json", status.to_dict())
    (paths.runs_dir / JOBS_DIR / "current").write_text(job.name)
    return run


def test_a_run_of_other_classes_is_not_compared_and_its_test_part_is_shown(page):
    # The current model (conftest's stand-in) sorts blue, green, red; this run four garment classes.
    test = {"accuracy": 0.625, "macro_f1": 0.6, "n_images": 16}
    finished_job(Paths.from_env(), ["chinos", "jeans", "shorts", "skirt"], test)
    at = page.run()
    assert not at.exception
    shown = {m.label: m for m in at.metric}
    assert shown["Validation accuracy"].value == "75.0%" and not shown["Validation accuracy"].delta
    assert "Current model: accuracy" not in shown
    captions = "\n".join(c.value for c in at.caption)
    assert "Not compared with **shipped**: it sorts photos into 3 classes (blue, green, red)" in captions
    assert "one photo more or less right moves its accuracy by 2.5%" in captions
    assert shown["Test accuracy"].value == "62.5%" and "test part (16 photos)" in captions
