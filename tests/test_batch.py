"""Batch classification: path expansion, streaming order and bounds, result files, resume, the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import CLASSES, PROJECT_ROOT, make_image

from clothclf.cli import main
from clothclf.errors import ClothclfError, InvalidImageError
from clothclf.serving.batch import catalog_files, expand_paths, predict_catalog
from clothclf.serving.classifier import load_classifier
from clothclf.serving.result_files import columns, open_result_file


@pytest.fixture(scope="module")
def classifier(tiny_run):
    return load_classifier(tiny_run, pool_size=2)


@pytest.fixture
def catalog(tmp_path) -> Path:
    """Six photos in nested folders, plus things a walk must skip and one unreadable photo."""
    rng = np.random.default_rng(3)
    root = tmp_path / "catalog"
    for i, sub in enumerate(["a", "a/deeper", "b", "b", "c", "c"]):
        (root / sub).mkdir(parents=True, exist_ok=True)
        make_image(i % 3, rng).save(root / sub / f"photo{i}.png")
    (root / ".hidden").mkdir()
    make_image(0, rng).save(root / ".hidden" / "skipped.png")
    make_image(0, rng).save(root / "a" / ".skipped.png")
    (root / "a" / "notes.txt").write_text("not a photo")
    (root / "c" / "broken.jpg").write_text("<html>not an image</html>")
    return root


def photos(root: Path) -> list[str]:
    """The catalog's photos in walk order: a folder's files (sorted), then its subfolders (sorted)."""
    names = ["a/photo0.png", "a/deeper/photo1.png", "b/photo2.png", "b/photo3.png", "c/broken.jpg"]
    return [str(root / name) for name in [*names, "c/photo4.png", "c/photo5.png"]]


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def test_expand_paths_walks_folders_in_order_and_skips_hidden_and_other_files(catalog, tmp_path):
    missing = str(tmp_path / "missing.jpg")
    found = list(expand_paths([catalog, missing]))
    assert found[-1] == missing  # kept, so it becomes an error row
    walked = found[:-1]
    assert walked == photos(catalog)  # no hidden file or folder, no .txt
    uris = list(expand_paths([f"file://{catalog}"]))
    assert uris == [f"file://{p}" for p in walked]


def test_predict_stream_keeps_order_and_errors_in_place_and_reads_lazily(classifier, catalog):
    files = photos(catalog)
    expected = [classifier.predict(f) if not f.endswith(".jpg") else None for f in files]
    results = list(classifier.predict_stream(files, workers=2))
    for want, got in zip(expected, results, strict=True):
        if want is None:
            assert isinstance(got, InvalidImageError) and "broken.jpg" in str(got)
        else:
            assert got.label == want.label and got.confidence == pytest.approx(want.confidence, abs=1e-6)

    consumed = 0

    def endless():
        nonlocal consumed
        while True:
            consumed += 1
            yield files[0]

    stream = classifier.predict_stream(endless(), workers=2)
    next(stream)
    from clothclf.serving.classifier import CHUNK_SIZE

    assert consumed <= (2 * 2 + 2) * CHUNK_SIZE  # a bounded window, not the whole (endless) input
    stream.close()


def test_columns_are_the_answer_fields(classifier, catalog):
    prediction = classifier.predict(photos(catalog)[0])
    assert columns() == ("file", *prediction.to_dict(), "error")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_out_file_rows_and_resume_after_a_kill(tiny_run, classifier, catalog, tmp_path, suffix):
    files = photos(catalog)
    out = tmp_path / f"rows{suffix}"
    summary = predict_catalog([catalog], out, model_dir=tiny_run, top_k=2)
    assert (summary.classified, summary.failed, summary.skipped) == (6, 1, 0)
    rows = read_rows(out)
    assert [r["file"] for r in rows] == files
    for row in rows:
        if row["file"].endswith(".jpg"):
            assert "broken.jpg" in row["error"]
        else:
            assert row["label"] == classifier.predict(row["file"]).answer and not row.get("error")

    with pytest.raises(ClothclfError, match="--resume"):
        predict_catalog([catalog], out, model_dir=tiny_run)

    if suffix == ".parquet":  # a killed run leaves the Parquet file of before and its journal
        out.unlink()
        journal = out.with_name(f".{out.name}.partial.jsonl")
        journal.write_text("".join(json.dumps({"file": f, "label": "x"}) + "\n" for f in files[:2]))
        journal.write_text(journal.read_text() + '{"file": "torn')
    else:  # a killed run: two rows and a torn third
        text = out.read_text()
        lines = text.splitlines(keepends=True)
        keep = 3 if suffix == ".csv" else 2
        out.write_text("".join(lines[:keep]) + lines[keep][:10])
    summary = predict_catalog([catalog], out, model_dir=tiny_run, resume=True)
    assert summary.skipped == 2 and summary.classified + summary.failed == 5
    assert [r["file"] for r in read_rows(out)] == files  # each once, in order, no torn row


def test_cli_folder_and_list_to_csv_with_summary_and_exit_status(tiny_run, catalog, tmp_path, capsys):
    files = photos(catalog)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(files[:2]) + "\n\n" + str(catalog / "c") + "\n")
    out = tmp_path / "rows.csv"
    code = main(["predict", "--model", str(tiny_run), "--from-list", str(listing), "--out", str(out)])
    assert code == 1  # broken.jpg failed
    assert "4 classified, 1 failed" in capsys.readouterr().err
    assert [r["file"] for r in read_rows(out)] == files[:2] + [f for f in files if "/c/" in f]

    good = [f for f in files if f.endswith(".png")]
    assert main(["predict", "--model", str(tiny_run), "--json", *good]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["file"] for line in lines] == good and all(line["closest"] in CLASSES for line in lines)
    assert "6 classified, 0 failed" in captured.err


def test_cli_refuses_resume_without_out_and_no_paths(tiny_run, capsys):
    assert main(["predict", "--model", str(tiny_run)]) == 1
    assert main(["predict", "--model", str(tiny_run), "--resume", "x.png"]) == 1
    assert "--resume needs --out" in capsys.readouterr().err


def test_cli_ends_quietly_when_the_reader_of_its_output_leaves(tiny_run, catalog):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    many = [str(p) for p in sorted(catalog.rglob("photo*.png"))] * 200
    command = [sys.executable, "-m", "clothclf", "predict", "--model", str(tiny_run), "--json", *many]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        first = process.stdout.readline()
        process.stdout.close()  # like `| head -1`
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=120) == 0
    assert json.loads(first)["file"] == many[0]
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr


def test_open_result_file_refuses_unknown_suffix(tmp_path):
    with pytest.raises(ClothclfError, match=".csv, .jsonl, .parquet"):
        open_result_file(tmp_path / "rows.txt")


def test_catalog_files_reads_lists_lazily(catalog, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{catalog / 'b'}\r\n")
    assert list(catalog_files([], listing)) == [str(catalog / "b" / f"photo{i}.png") for i in (2, 3)]


def test_progress_line_shows_rate_and_time_left(tiny_run, catalog, tmp_path, capsys):
    summary = predict_catalog([catalog], tmp_path / "rows.jsonl", model_dir=tiny_run, progress=True)
    err = capsys.readouterr().err
    assert summary.classified == 6
    assert "\r7/7 photos (100%)" in err and "photos/s  ETA 0:00" in err and err.endswith("\n")


def test_a_begun_parquet_file_is_not_overwritten_without_resume(tiny_run, catalog, tmp_path):
    out = tmp_path / "rows.parquet"
    out.with_name(f".{out.name}.partial.jsonl").write_text(json.dumps({"file": "x.png", "label": "x"}) + "\n")
    with pytest.raises(ClothclfError, match="was begun .* add --resume"):
        predict_catalog([catalog], out, model_dir=tiny_run)
    assert out.with_name(f".{out.name}.partial.jsonl").read_text().startswith('{"file": "x.png"')


def test_parquet_takes_file_names_that_are_not_utf8(tiny_run, tmp_path):
    name = os.fsdecode(b"caf\xe9.png")  # a name from an old Latin-1 system, as Python reads it
    make_image(0, np.random.default_rng(0)).save(tmp_path / name)
    out = tmp_path / "rows.parquet"
    summary = predict_catalog([tmp_path / name], out, model_dir=tiny_run)
    assert summary.classified == 1
    (row,) = read_rows(out)
    assert row["file"].endswith("caf\\xe9.png") and row["closest"] in CLASSES


def test_resume_knows_a_photo_by_its_absolute_path(tiny_run, catalog, tmp_path, monkeypatch):
    out = tmp_path / "rows.csv"
    predict_catalog([catalog], out, model_dir=tiny_run)
    monkeypatch.chdir(catalog.parent)
    summary = predict_catalog([catalog.name], out, model_dir=tiny_run, resume=True)
    assert (summary.skipped, summary.classified, summary.failed) == (7, 0, 0)
    assert len(read_rows(out)) == 7


def test_explanations_of_same_named_photos_and_listed_photos_each_get_a_file(tiny_run, tmp_path, capsys):
    rng = np.random.default_rng(1)
    for folder in ("x", "y", "z"):
        (tmp_path / folder).mkdir()
        make_image(0, rng).save(tmp_path / folder / "photo.png")
    listing = tmp_path / "list.txt"
    listing.write_text(str(tmp_path / "z" / "photo.png") + "\n")
    out = tmp_path / "explained"
    args = ["predict", "--model", str(tiny_run), "--explain", str(out), "--from-list", str(listing)]
    assert main([*args, str(tmp_path / "x"), str(tmp_path / "y")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["photo-2.png", "photo-3.png", "photo.png"]
    (tmp_path / "a-file").write_text("")
    assert main(["predict", "--model", str(tiny_run), "--explain", str(tmp_path / "a-file"), str(out)]) == 1
    assert "not a folder" in capsys.readouterr().err
