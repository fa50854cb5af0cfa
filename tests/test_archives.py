"""Safe zip extraction: every kind of hostile archive is refused and leaves nothing behind."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from helpers import noisy_png, zip_bytes

from clothclf.config import Limits
from clothclf.data.archives import safe_extract_zip
from clothclf.data.datasets import create_dataset
from clothclf.data.layout import read_layout
from clothclf.errors import DatasetError, LimitExceededError


def build_zip(
    path: Path, entries: dict[str | zipfile.ZipInfo, bytes], compression=zipfile.ZIP_DEFLATED
) -> Path:
    """:func:`helpers.zip_bytes` of ``entries`` written at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zip_bytes(entries, compression))
    return path


def mark_encrypted(path: Path) -> None:
    """Set the 'encrypted' flag bit of every entry (zipfile cannot write encrypted zips itself)."""
    data = bytearray(path.read_bytes())
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (start := data.find(signature, start)) >= 0:
            data[start + flag_offset] |= 0x1
            start += 4
    path.write_bytes(bytes(data))


@pytest.fixture
def out(tmp_path) -> Path:
    """The parent folder of the extraction destination: it must stay empty after a refusal."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def assert_nothing_written(tmp_path: Path, out: Path) -> None:
    assert list(out.iterdir()) == [], "a refused archive must leave no folder, file or temp folder"
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert all(name.startswith("zips/") for name in written), written


def test_normal_zip_extracts_every_safe_entry_including_macos_and_hidden_files(tmp_path, out):
    # What to use of them is the dataset reader's choice, so it can list what it skipped.
    shirt, skirt = noisy_png(0), noisy_png(1, seed=1)
    archive = build_zip(
        tmp_path / "zips" / "ok.zip",
        {
            "shirts/": b"",
            "shirts/a.png": shirt,
            "skirts/nested/b.PNG": skirt,
            "./notes.txt": b"hello",
            "__MACOSX/shirts/._a.png": b"resource fork",
            "shirts/.DS_Store": b"finder",
            ".git/config": b"[core]",
        },
    )
    dest = safe_extract_zip(archive, out / "dataset")
    assert dest == out / "dataset"
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == [
        ".git/config",
        "__MACOSX/shirts/._a.png",
        "notes.txt",
        "shirts/.DS_Store",
        "shirts/a.png",
        "skirts/nested/b.PNG",
    ]
    assert (dest / "shirts" / "a.png").read_bytes() == shirt
    assert (dest / "skirts" / "nested" / "b.PNG").read_bytes() == skirt
    assert [p.name for p in out.iterdir()] == ["dataset"], "the temporary folder must be gone"


def test_file_object_source_and_existing_empty_dest(tmp_path, out):
    archive = build_zip(tmp_path / "zips" / "ok.zip", {"a/x.png": noisy_png()})
    (out / "dataset").mkdir()
    with archive.open("rb") as handle:
        dest = safe_extract_zip(handle, out / "dataset")
    assert (dest / "a" / "x.png").is_file()
    upload = io.BytesIO(archive.read_bytes())
    assert (safe_extract_zip(upload, out / "again") / "a" / "x.png").is_file()


def test_refuses_a_file_that_is_not_a_zip(tmp_path, out):
    fake = tmp_path / "zips" / "photo.zip"
    fake.parent.mkdir()
    fake.write_bytes(noisy_png())
    with pytest.raises(DatasetError, match="not a zip file"):
        safe_extract_zip(fake, out / "dataset")
    with pytest.raises(DatasetError, match="not a zip file"):
        safe_extract_zip(io.BytesIO(b""), out / "dataset")
    assert_nothing_written(tmp_path, out)


def test_refuses_a_non_empty_destination(tmp_path, out):
    archive = build_zip(tmp_path / "zips" / "ok.zip", {"a/x.png": noisy_png()})
    (out / "dataset").mkdir()
    (out / "dataset" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="already exists"):
        safe_extract_zip(archive, out / "dataset")
    assert [p.name for p in (out / "dataset").iterdir()] == ["keep.txt"]


def test_refuses_an_archive_over_the_size_limit(tmp_path, out):
    archive = build_zip(
        tmp_path / "zips" / "big.zip", {"a/noise.bin": os.urandom(1_200_000)}, zipfile.ZIP_STORED
    )
    with pytest.raises(LimitExceededError, match="max_zip_mb"):
        safe_extract_zip(archive, out / "dataset", Limits(max_zip_mb=1))
    assert_nothing_written(tmp_path, out)


def test_refuses_too_many_entries(tmp_path, out):
    archive = build_zip(tmp_path / "zips" / "many.zip", {f"a/{i}.txt": b"x" for i in range(4)})
    with pytest.raises(LimitExceededError, match="4 entries.*max_zip_entries"):
        safe_extract_zip(archive, out / "dataset", Limits(max_zip_entries=3))
    assert_nothing_written(tmp_path, out)


def test_refuses_too_much_uncompressed_data(tmp_path, out):
    entries = {f"a/{i}.bin": os.urandom(600_000) for i in range(2)}
    archive = build_zip(tmp_path / "zips" / "large.zip", entries, zipfile.ZIP_STORED)
    with pytest.raises(LimitExceededError, match="max_zip_uncompressed_mb"):
        safe_extract_zip(archive, out / "dataset", Limits(max_zip_uncompressed_mb=1))
    assert_nothing_written(tmp_path, out)


def test_refuses_a_high_ratio_zip_bomb(tmp_path, out):
    archive = build_zip(
        tmp_path / "zips" / "bomb.zip", {"a/ok.png": noisy_png(), "a/bomb.bin": bytes(256 * 1024)}
    )
    with pytest.raises(LimitExceededError, match=r"'a/bomb.bin' expands .* times.*max_zip_ratio"):
        safe_extract_zip(archive, out / "dataset", Limits(max_zip_ratio=20))
    # 256 KiB of zeros deflates about 1000:1, so the default limit of 200 refuses it too.
    with pytest.raises(LimitExceededError, match="zip bomb"):
        safe_extract_zip(archive, out / "dataset")
    assert_nothing_written(tmp_path, out)


def test_small_compressible_files_are_not_ratio_checked(tmp_path, out):
    archive = build_zip(tmp_path / "zips" / "text.zip", {"a/labels.csv": b"shirt,1\n" * 4000})
    dest = safe_extract_zip(archive, out / "dataset", Limits(max_zip_ratio=2))
    assert (dest / "a" / "labels.csv").stat().st_size == 32_000


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../evil.txt", r"'\.\./evil\.txt' points outside"),
        ("a/../../evil.txt", "points outside"),
        ("..\\evil.txt", "points outside"),
        ("/tmp/x", "'/tmp/x' has an absolute path"),
        ("C:/evil.txt", "absolute path"),
        ("C:\\evil.txt", "absolute path"),
    ],
)
def test_refuses_entries_that_escape_the_destination(tmp_path, out, name, message):
    archive = build_zip(tmp_path / "zips" / "escape.zip", {"a/ok.png": noisy_png(), name: b"pwned"})
    with pytest.raises(DatasetError, match=message):
        safe_extract_zip(archive, out / "dataset")
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/x").exists()
    assert_nothing_written(tmp_path, out)


def test_refuses_an_absolute_entry_pointing_at_a_real_folder(tmp_path, out):
    victim = tmp_path / "victim.txt"
    archive = build_zip(tmp_path / "zips" / "abs.zip", {str(victim): b"pwned"})
    with pytest.raises(DatasetError, match="absolute path"):
        safe_extract_zip(archive, out / "dataset")
    assert not victim.exists()
    assert_nothing_written(tmp_path, out)


def test_refuses_symlink_entries(tmp_path, out):
    link = zipfile.ZipInfo("a/passwd.png")
    link.external_attr = 0o120777 << 16
    archive = build_zip(tmp_path / "zips" / "link.zip", {"a/ok.png": noisy_png(), link: b"/etc/passwd"})
    with pytest.raises(DatasetError, match="'a/passwd.png' is a symbolic link"):
        safe_extract_zip(archive, out / "dataset")
    assert_nothing_written(tmp_path, out)


def test_refuses_encrypted_entries(tmp_path, out):
    archive = build_zip(tmp_path / "zips" / "secret.zip", {"a/ok.png": noisy_png()})
    mark_encrypted(archive)
    with pytest.raises(DatasetError, match="'a/ok.png' is encrypted"):
        safe_extract_zip(archive, out / "dataset")
    assert_nothing_written(tmp_path, out)


def test_refuses_compression_methods_without_bounded_decompression(tmp_path, out):
    archive = build_zip(tmp_path / "zips" / "bz2.zip", {"a/ok.png": noisy_png()}, zipfile.ZIP_BZIP2)
    with pytest.raises(DatasetError, match="compression method 12"):
        safe_extract_zip(archive, out / "dataset")
    assert_nothing_written(tmp_path, out)


def test_a_damaged_entry_fails_midway_and_leaves_nothing(tmp_path, out):
    good = noisy_png()
    archive = build_zip(
        tmp_path / "zips" / "damaged.zip", {"a/1.png": good, "a/2.png": noisy_png(seed=2)}, zipfile.ZIP_STORED
    )
    data = archive.read_bytes()
    second = noisy_png(seed=2)
    at = data.index(second) + len(second) // 2
    archive.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :])
    with pytest.raises(DatasetError, match="'a/2.png' is damaged"):
        safe_extract_zip(archive, out / "dataset")
    assert_nothing_written(tmp_path, out)


def test_the_reader_descends_wrapper_folders(tmp_path):
    (tmp_path / "x" / "clothing-dataset-small-master" / "train" / "shirt").mkdir(parents=True)
    (tmp_path / "x" / "clothing-dataset-small-master" / "train" / "shirt" / "1.jpg").write_bytes(b"")
    (tmp_path / "x" / "__MACOSX").mkdir()
    layout = read_layout(tmp_path / "x")
    assert layout.root == (tmp_path / "x" / "clothing-dataset-small-master").resolve()
    assert [(s.path, s.reason) for s in layout.skipped] == [("__MACOSX/", "macOS metadata folder")]

    flat = tmp_path / "y" / "wrapper" / "inner"
    for name in ("shirt", "skirt"):
        (flat / name).mkdir(parents=True)
        (flat / name / "1.jpg").write_bytes(b"")
    (tmp_path / "y" / "wrapper" / "README.md").write_text("about")
    layout = read_layout(tmp_path / "y")
    assert layout.root == flat.resolve()
    assert [s.path for s in layout.skipped] == ["wrapper/README.md"]


def test_the_reader_stops_at_a_single_class_folder(tmp_path):
    (tmp_path / "wrapper" / "shirt").mkdir(parents=True)
    (tmp_path / "wrapper" / "shirt" / "1.JPG").write_bytes(b"")
    assert read_layout(tmp_path).root == (tmp_path / "wrapper").resolve()


def test_a_folder_without_class_folders_is_refused(tmp_path):
    (tmp_path / "wrapper" / "docs").mkdir(parents=True)
    (tmp_path / "wrapper" / "docs" / "notes.txt").write_text("no images")
    (tmp_path / "loose.jpg").write_bytes(b"")  # images outside class folders do not count
    with pytest.raises(
        DatasetError,
        match=r"no photo clothclf can read \(1 file: not inside a class folder; 1 file: not a photo \(\.txt\)\)",
    ):
        create_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such dataset folder"):
        create_dataset(tmp_path / "missing")
