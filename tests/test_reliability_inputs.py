"""Bad, odd and oversized inputs through every door, end to end.

Photos go through the Python API (``try_predict_batch``), the CLI (``python -m clothclf predict`` in a
subprocess), the upload function of the app (``classify_uploads``) and the Classify page (AppTest).
Dataset zips go through the Fine-tune path: the function the page calls and the page itself.
The decoder and the zip checks alone are tested in ``test_images.py`` and ``test_archives.py``.

The model is a small CNN trained from scratch on the synthetic red/green/blue dataset (about 30 s,
once per session). Unlike ``tiny_run``, whose untrained MobileNetV2 features give every photo the
same answer, it tells the colours apart, so these tests can check that the right label comes back.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from helpers import CLASSES, PROJECT_ROOT, zip_bytes
from PIL import Image, features
from streamlit.testing.v1 import AppTest

from clothclf.app.jobs import current_job
from clothclf.app.training_data import extract_uploaded_dataset, uploads_dir
from clothclf.app.uploads import classify_uploads
from clothclf.config import AugmentConfig, Limits, Paths, TrainConfig
from clothclf.data.datasets import create_dataset
from clothclf.errors import ClothclfError, DatasetError, LimitExceededError
from clothclf.serving.classifier import Prediction, load_classifier

APP = str(PROJECT_ROOT / "streamlit_app.py")
LIMITS = Limits()
MB = 1024 * 1024
PIXEL_LIMIT = f"over the limit of {LIMITS.max_pixels:,} pixels"


def colour_model(base: Path, dataset: Path) -> Path:
    """The colour CNN under ``base``, trained on ``dataset`` the first time it is asked for."""
    from clothclf.training.loop import train

    run_dir = base / "colour-model"
    if not (run_dir / "run.json").is_file():
        config = TrainConfig(
            data_dir=str(dataset),
            backbone="custom_cnn",
            weights=None,
            image_size=32,
            batch_size=8,
            epochs=8,
            lr=3e-3,
            patience=100,
            augment=AugmentConfig(enabled=False),
        )
        paths = Paths(base / "colour-data", base / "colour-cache", base / "colour-runs", run_dir)
        train(config, run_dir, paths=paths)
    return run_dir


@pytest.fixture(scope="session")
def model(tmp_path_factory, synthetic_dataset) -> Path:
    return colour_model(tmp_path_factory.getbasetemp(), synthetic_dataset)


# --- files ---------------------------------------------------------------------------------------


def coloured(class_name: str, width: int = 48, height: int = 40, seed: int = 0) -> np.ndarray:
    """Pixels like the training images: noise with the class's colour channel raised."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 80, (height, width, 3)).astype(np.uint8)
    pixels[..., CLASSES.index(class_name)] += 150
    return pixels


def encode(image: Image.Image | np.ndarray, fmt: str, **options) -> bytes:
    image = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_of_size(width: int, height: int) -> bytes:
    """A valid black 1-bit PNG of any size, written without holding its pixels (about 1 KB per 10 MP).

    Each row is a filter byte and ``width / 8`` zero bytes, streamed through zlib."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    rows_per_step = max(1, 4 * MB // len(row))
    packed = [
        compressor.compress(row * min(rows_per_step, height - y)) for y in range(0, height, rows_per_step)
    ]
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = b"".join(packed) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bad_files() -> dict[str, tuple[bytes, str]]:
    """File name -> (content, what its message must say)."""
    jpeg = encode(coloured("red", 64, 64), "JPEG")
    return {
        "empty.jpg": (b"", "the file is empty"),
        "notes.jpg": (b"shopping list: socks, a hat\n", "not an image format"),
        "page.png": (b"<!doctype html><html><body>404 Not Found</body></html>", "not an image format"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "damaged or truncated"),
        "header-only.png": (b"\x89PNG\r\n\x1a\n", "not an image format"),
        "archive.png": (zip_bytes({"a.txt": b"hello"}), "not an image format"),
        "drawing.svg": (
            b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><rect width="9" height="9"/></svg>',
            "not an image format",
        ),
        "bomb.png": (png_of_size(20_000, 20_000), PIXEL_LIMIT),
    }


def good_files() -> dict[str, tuple[bytes, str]]:
    """File name -> (content, expected label)."""
    return {
        f"good-{name}.png": (encode(coloured(name, seed=i), "PNG"), name) for i, name in enumerate(CLASSES)
    }


def interleave(bad: dict, good: dict) -> list[str]:
    """Bad and good names mixed (a good one after every third bad one), each name once."""
    names, goods = [], list(good)
    for i, name in enumerate(bad):
        names.append(name)
        if i % 3 == 0 and goods:
            names.append(goods.pop(0))
    return names + goods


def odd_files() -> dict[str, tuple[bytes, str | None]]:
    """Valid images in unusual forms -> (content, expected label or None when it has no colour)."""
    rgba = np.dstack([coloured("blue"), np.full((40, 48), 255, np.uint8)])
    rgba[:3, :, 3] = 0  # a transparent top edge, composited on white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    frames = [Image.fromarray(coloured("red")), Image.fromarray(coloured("blue", seed=1))]
    files = {
        "cmyk.jpg": (encode(Image.fromarray(coloured("red")).convert("CMYK"), "JPEG"), "red"),
        "grey.png": (encode(Image.fromarray(coloured("green")).convert("L"), "PNG"), None),
        "sixteen-bit.png": (
            encode(Image.fromarray((np.arange(40 * 48).reshape(40, 48) * 30).astype(np.uint16)), "PNG"),
            None,
        ),
        "palette.gif": (encode(Image.fromarray(coloured("green")).convert("P"), "GIF"), "green"),
        "alpha.png": (encode(rgba, "PNG"), "blue"),
        "animated.gif": (
            encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
            "red",  # the first frame
        ),
        "rotated.jpg": (encode(coloured("blue", 48, 32), "JPEG", exif=exif.tobytes()), "blue"),
        "one-pixel.png": (encode(np.array([[[200, 30, 40]]], np.uint8), "PNG"), None),
        "camera-6000x4000.jpg": (
            encode(
                Image.fromarray(coloured("green", 24, 16)).resize((6000, 4000), Image.Resampling.NEAREST),
                "JPEG",
            ),
            "green",
        ),
        "UPPER.JPG": (encode(coloured("red", seed=5), "JPEG"), "red"),
        "UPPER.PNG": (encode(coloured("blue", seed=6), "PNG"), "blue"),
    }
    if features.check("webp"):
        files["photo.webp"] = (encode(coloured("green", seed=7), "WEBP", quality=90), "green")
    return files


def write_files(folder: Path, files: dict[str, tuple[bytes, object]], names: Sequence[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(files[name][0])
    return [folder / name for name in names]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "clothclf", *args], env=env, capture_output=True, text=True, timeout=300
    )


# --- bad files -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_batch() -> tuple[dict[str, tuple[bytes, str]], list[str]]:
    bad, good = bad_files(), good_files()
    return {**bad, **good}, interleave(bad, good)


Outcome = tuple[str | None, str | None]  # (label, error message): exactly one is set


def outcome(result) -> Outcome:
    """The label or error message of an API result, an upload result or a CLI JSON line."""
    if isinstance(result, Prediction):
        return result.label, None
    if isinstance(result, ClothclfError):
        return None, str(result)
    if isinstance(result, dict):  # a row's label may be "unknown"; closest is the class either way
        return result.get("closest"), result.get("error")
    return (result.prediction.label if result.ok else None), result.error


def check_batch(names: Sequence[str], outcomes: Sequence[Outcome], files) -> None:
    """Every bad file has its own clear message; every good file has the right label."""
    for name, (label, error) in zip(names, outcomes, strict=True):
        expected = files[name][1]
        if name.startswith("good-"):
            assert (label, error) == (expected, None), name
        else:
            assert label is None and expected in error, (name, error)


def test_api_bad_files_get_their_own_error_and_the_rest_are_classified(model, bad_batch, tmp_path):
    files, names = bad_batch
    paths = write_files(tmp_path, files, names) + [tmp_path / "missing.jpg"]
    files = {**files, "missing.jpg": (b"", "no such file")}
    classifier = load_classifier(model)
    results = [outcome(r) for r in classifier.try_predict_batch(paths)]
    check_batch([p.name for p in paths], results, files)
    for path, (_, error) in zip(paths, results):
        assert error is None or error.startswith(f"{path}: "), "the message names the file"
    # The same files as bytes (what the app holds) get the same answers and messages.
    in_memory = [outcome(r) for r in classifier.try_predict_batch([files[name][0] for name in names])]
    assert [(label, error and error.removeprefix("<bytes>: ")) for label, error in in_memory] == [
        (label, error and error.removeprefix(f"{path}: "))
        for path, (label, error) in zip(paths, results[:-1])
    ]


def test_cli_bad_files_one_line_each_exit_1_and_no_traceback(model, bad_batch, tmp_path):
    files, names = bad_batch
    paths = write_files(tmp_path, files, names) + [tmp_path / "missing.jpg"]
    files = {**files, "missing.jpg": (b"", "no such file")}
    done = run_cli("predict", "--model", str(model), "--json", *map(str, paths))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["file"] for line in lines] == list(map(str, paths))
    check_batch([p.name for p in paths], [outcome(line) for line in lines], files)

    human = run_cli("predict", "--model", str(model), *map(str, paths))
    assert human.returncode == 1
    assert "Traceback" not in human.stderr + human.stdout
    errors = [line for line in human.stderr.splitlines() if ": error: " in line]
    assert [line.split(": error: ")[0] for line in errors] == [str(p) for p in paths if "good-" not in p.name]
    assert [line.split(": ")[0] for line in human.stdout.splitlines()] == [
        str(p) for p in paths if "good-" in p.name
    ]


def test_upload_function_bad_files_get_their_own_message(model, bad_batch):
    files, names = bad_batch
    results = classify_uploads(load_classifier(model), [(n, files[n][0]) for n in names], LIMITS)
    assert [r.name for r in results] == names
    check_batch(names, [outcome(r) for r in results], files)
    assert not any(r.error.startswith("<bytes>") for r in results if r.error)


@pytest.fixture
def classify_page(model, monkeypatch) -> AppTest:
    monkeypatch.setenv("CLOTHCLF_MODEL_DIR", str(model))
    return AppTest.from_file(APP, default_timeout=120).run()


def test_classify_page_bad_files_get_their_own_message(classify_page, bad_batch):
    files, names = bad_batch
    at = classify_page
    # The uploader takes any file (its type filter would drop the others without a word): the .svg
    # file gets its own message too.
    assert not at.file_uploader[0].proto.type and any(n.endswith(".svg") for n in names)
    bad = {n: files[n][1] for n in names if not n.startswith("good-")}
    at.file_uploader[0].set_value([(n, files[n][0], "application/octet-stream") for n in names]).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    named = {e: e.split(": ", 1)[0] for e in errors}  # "**a.jpg**" or "**4 photos** (a.jpg, b.png, …)"
    for name, message in bad.items():  # each bad file is named once, in a message that says why
        [error] = [e for e, head in named.items() if name in re.split(r"[\s(),*]+", head)]
        assert message in error, (name, errors)
    assert all(any(name in re.split(r"[\s(),*]+", head) for name in bad) for head in named.values()), errors
    table = at.dataframe[0].value
    assert list(table["file"]) == names
    labels = dict(zip(table["file"], table["label"]))
    assert {n: labels[n] for n in names if n.startswith("good-")} == {
        n: files[n][1] for n in names if n.startswith("good-")
    }


# --- odd but valid images ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def odd() -> dict[str, tuple[bytes, str | None]]:
    return odd_files()


def check_odd(odd, names: Sequence[str], outcomes: Sequence[Outcome], class_names) -> None:
    for name, (label, error) in zip(names, outcomes, strict=True):
        assert error is None and label in (*class_names, "unknown"), (name, error)
        expected = odd[name][1]
        assert expected is None or label == expected, name


def test_api_classifies_odd_but_valid_images(model, odd, tmp_path):
    classifier = load_classifier(model)
    results = classifier.try_predict_batch(write_files(tmp_path, odd, list(odd)))
    check_odd(odd, list(odd), [outcome(r) for r in results], classifier.class_names)
    uploads = classify_uploads(classifier, [(name, data) for name, (data, _) in odd.items()], LIMITS)
    check_odd(odd, list(odd), [outcome(u) for u in uploads], classifier.class_names)


def test_cli_classifies_odd_but_valid_images(model, odd, tmp_path):
    paths = write_files(tmp_path, odd, list(odd))
    done = run_cli("predict", "--model", str(model), "--json", *map(str, paths))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [Path(line["file"]).name for line in lines] == list(odd)
    check_odd(odd, list(odd), [outcome(line) for line in lines], CLASSES)


# --- limits: bytes, pixels and files per upload batch --------------------------------------------


def over_the_limits() -> list[tuple[str, bytes]]:
    """A valid photo padded past the upload size, an image over the pixel limit, then one file too many."""
    heavy = encode(coloured("red"), "PNG") + bytes(LIMITS.max_upload_mb * MB)  # Pillow ignores the tail
    wide = png_of_size(8_000, 7_000)  # 56 MP: under Pillow's own bomb guard, over clothclf's limit
    photos = [(f"photo-{i:02d}.png", encode(coloured(CLASSES[i % 3], seed=i), "PNG")) for i in range(48)]
    uploads = [("heavy.png", heavy), ("wide.png", wide), *photos]
    return uploads + [("one-too-many.png", photos[0][1])]


LIMIT_MESSAGES = {
    "heavy.png": f"over the limit of {LIMITS.max_upload_mb} MB per file",
    "wide.png": f"8000x7000 pixels is {PIXEL_LIMIT}",
    "one-too-many.png": f"at most {LIMITS.max_files_per_batch} files per batch",
}


def test_upload_limits_each_say_the_limit(model):
    uploads = over_the_limits()
    assert len(uploads) == LIMITS.max_files_per_batch + 1
    results = classify_uploads(load_classifier(model), uploads, LIMITS)
    for result in results:
        if result.name in LIMIT_MESSAGES:
            assert not result.ok and LIMIT_MESSAGES[result.name] in result.error, result
        else:
            assert result.ok and result.prediction.label == CLASSES[int(result.name[6:8]) % 3]


def test_classify_page_limits_each_say_the_limit(classify_page):
    at = classify_page
    uploader = at.file_uploader[0]
    assert uploader.proto.max_upload_size_mb == LIMITS.max_upload_mb  # the browser refuses bigger files too
    uploader.set_value([(name, data, "image/png") for name, data in over_the_limits()]).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = {e.value.split("**")[1]: e.value for e in at.error}
    assert set(errors) == set(LIMIT_MESSAGES)
    for name, message in LIMIT_MESSAGES.items():
        assert message in errors[name]
    assert f"{LIMITS.max_files_per_batch - 2} photos classified" in [s.value for s in at.subheader]


def test_cli_pixel_limit_says_the_limit(model, tmp_path):
    wide = tmp_path / "wide.png"
    wide.write_bytes(png_of_size(8_000, 7_000))
    done = run_cli("predict", "--model", str(model), str(wide))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"8000x7000 pixels is {PIXEL_LIMIT}" in done.stderr


# --- dataset zips through the Fine-tune path -----------------------------------------------------


def zip_of_copies(names: Sequence[str], data: bytes) -> bytes:
    """A valid zip whose entries all hold ``data``, deflated once and repeated: how zip bombs are made
    cheaply (a GB of entries in milliseconds)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = compressor.compress(data) + compressor.flush()
    crc, date = zlib.crc32(data), (1 << 5) | 1  # 1980-01-01
    out, central = io.BytesIO(), []
    for name in names:
        encoded, offset = name.encode(), out.tell()
        out.write(
            struct.pack(
                "<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, date, crc, len(packed), len(data), len(encoded), 0
            )
        )
        out.write(encoded + packed)
        central.append(
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                20,
                20,
                0,
                8,
                0,
                date,
                crc,
                len(packed),
                len(data),
                len(encoded),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + encoded
        )
    start = out.tell()
    out.write(b"".join(central))
    out.write(
        struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(names), len(names), out.tell() - start, start, 0)
    )
    return out.getvalue()


def class_folders() -> dict[str, bytes]:
    """A small valid dataset (so only the hostile part of each zip is wrong)."""
    return {
        f"photos/{name}/{i}.png": encode(coloured(name, seed=i), "PNG") for name in CLASSES for i in range(10)
    }


def symlink_zip(target: Path) -> bytes:
    """The classic link attack: an entry that is a link to ``target``, then a file written through it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in class_folders().items():
            archive.writestr(name, data)
        link = zipfile.ZipInfo("photos/red/link")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, str(target))
        archive.writestr("photos/red/link/escaped.txt", b"written through the link")
    return buffer.getvalue()


def hostile_zips(outside: Path) -> dict[str, tuple[bytes, type[Exception], str]]:
    """Case -> (zip, error type, what the message must say). ``outside`` is where escapes would land."""
    photos = class_folders()
    uncompressed_entries = LIMITS.max_zip_uncompressed_mb * MB // (60 * 1024) + 25
    return {
        "dot-dot": (
            zip_bytes({**photos, "photos/red/../../../../../escaped.txt": b"pwned"}),
            DatasetError,
            "points outside the archive",
        ),
        "absolute": (
            zip_bytes({**photos, str(outside / "escaped.txt"): b"pwned"}),
            DatasetError,
            "has an absolute path",
        ),
        "symlink": (symlink_zip(outside), DatasetError, "is a symbolic link"),
        "ratio": (
            zip_bytes({**photos, "photos/red/bomb.png": bytes(2 * MB)}),
            LimitExceededError,
            f"over the limit of {LIMITS.max_zip_ratio:g} (max_zip_ratio)",
        ),
        "entries": (
            zip_of_copies([f"photos/red/{i:05d}.png" for i in range(LIMITS.max_zip_entries + 1)], b""),
            LimitExceededError,
            f"over the limit of {LIMITS.max_zip_entries:,} (max_zip_entries)",
        ),
        # Entries of 60 KiB are under the ratio check's minimum size: only the total stops them.
        "uncompressed": (
            zip_of_copies([f"photos/red/{i:05d}.png" for i in range(uncompressed_entries)], bytes(60 * 1024)),
            LimitExceededError,
            f"over the limit of {LIMITS.max_zip_uncompressed_mb:,} MB (max_zip_uncompressed_mb)",
        ),
    }


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` -> (size, modification time)."""
    return {
        p.relative_to(root).as_posix(): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")
    }


def outside_app_folders(tree: dict[str, tuple[int, int]], paths: Paths, root: Path) -> dict:
    own = tuple(p.relative_to(root).as_posix() for p in (paths.data_dir, paths.runs_dir))
    return {name: stat for name, stat in tree.items() if not name.startswith(own)}


CASES = ["dot-dot", "absolute", "symlink", "ratio", "entries", "uncompressed"]


@pytest.mark.parametrize("case", CASES)
def test_fine_tune_upload_refuses_hostile_zips_and_writes_nothing_outside(case, tmp_path):
    paths = Paths.from_env()
    outside = tmp_path / "outside"
    outside.mkdir()
    archive, error, message = hostile_zips(outside)[case]
    before = snapshot(tmp_path)
    with pytest.raises(error, match=re.escape(message)):
        extract_uploaded_dataset(io.BytesIO(archive), paths)
    after = snapshot(tmp_path)
    assert outside_app_folders(after, paths, tmp_path) == outside_app_folders(before, paths, tmp_path)
    assert not list(uploads_dir(paths).glob("*")), "a refused zip leaves nothing"


@pytest.mark.parametrize("case", CASES)
def test_fine_tune_page_refuses_hostile_zips_with_a_clear_message(case, model, tmp_path, monkeypatch):
    monkeypatch.setenv("CLOTHCLF_MODEL_DIR", str(model))
    paths = Paths.from_env()
    outside = tmp_path / "outside"
    outside.mkdir()
    archive, _, message = hostile_zips(outside)[case]
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/fine_tune.py").run()
    before = snapshot(tmp_path)
    at.file_uploader(key="ft_upload").set_value(("dataset.zip", archive, "application/zip"))
    at.button(key="ft_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert current_job(paths) is None
    after = snapshot(tmp_path)
    assert outside_app_folders(after, paths, tmp_path) == outside_app_folders(before, paths, tmp_path)
    assert not list(uploads_dir(paths).glob("*"))


def test_a_clean_zip_through_the_same_path_is_accepted(tmp_path):
    """The control case: the checks above refuse what is hostile, not every zip."""
    paths = Paths.from_env()
    folder = extract_uploaded_dataset(io.BytesIO(zip_bytes(class_folders())), paths)
    assert folder.parent == uploads_dir(paths)
    assert create_dataset(folder).class_names == tuple(sorted(CLASSES))
