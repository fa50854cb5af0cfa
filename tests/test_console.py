"""The CLI's terminal plumbing (``clothclf.console``) and the ``clothclf`` command as a user meets it:
defaults from the environment, one-line argument errors before any heavy import, a closed pipe,
file names in any encoding, and TensorFlow's native log lines kept out of stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import PROJECT_ROOT
from PIL import Image

from clothclf.cli import main
from clothclf.console import CLOSED_PIPE_EXIT, native_logs_filtered
from clothclf.modeling.backbones import BACKBONES

#: Lines TensorFlow 2.21 writes to file descriptor 2 on a CPU-only machine, as they appear.
NATIVE_LINES = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1795310723.842315   30584 port.cc:153] oneDNN custom operations are on.\n",
    b"I0000 00:00:1795310723.842836   30584 cudart_stub.cc:31] Could not find cuda drivers\n",
    b"E0000 00:00:1795310763.723985   30584 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n",
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow\n",
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
)


def write_to_fd2(lines) -> None:
    for line in lines:
        os.write(2, line)


def test_native_log_lines_are_dropped_and_everything_else_is_kept(capfd):
    with native_logs_filtered():
        write_to_fd2([*NATIVE_LINES[:2], b"clothclf: error: a real message\n", *NATIVE_LINES[2:]])
    assert capfd.readouterr().err == "clothclf: error: a real message\n"


def test_verbose_keeps_the_native_log_lines(capfd):
    with native_logs_filtered(enabled=False):
        write_to_fd2(NATIVE_LINES)
    assert capfd.readouterr().err.encode() == b"".join(NATIVE_LINES)


# --- the clothclf command, run as a user runs it -----------------------------------------------

SHIPPED_MODEL = PROJECT_ROOT / "models" / "default"


def clothclf(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "clothclf", *args], capture_output=True, env=environment, timeout=300, **kwargs
    )


def photos(folder: Path, names: list[bytes]) -> list[bytes]:
    """Small PNGs under ``folder`` with the given file names (bytes: any name the filesystem takes)."""
    folder.mkdir(exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (40, 32), (40 * i % 256, 120, 60)).save(os.fsdecode(bytes(folder) + b"/" + name))
    return [bytes(folder) + b"/" + name for name in names]


def test_an_unknown_backbone_is_one_line_before_tensorflow_or_numpy_is_imported():
    code = (
        "import sys\nfrom clothclf.cli import main\n"
        "try:\n    status = main(['train', '--backbone', 'mobilenetv2'])\n"
        "except SystemExit as exc:\n    status = exc.code\n"
        "print(status, 'tensorflow' in sys.modules, 'numpy' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ}
    )
    assert result.stdout.split() == ["2", "False", "False"]
    [line] = result.stderr.splitlines()
    assert line.startswith("clothclf train: error: argument --backbone: invalid choice: 'mobilenetv2'")
    assert all(name in line for name in BACKBONES)


def test_a_bad_flag_value_is_one_line():
    result = clothclf("train", "--epochs", "many")
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        "clothclf train: error: argument --epochs: invalid int value: 'many' (see clothclf train --help)"
    ]


@pytest.mark.parametrize("command", ["calibrate", "trust", "export"])
def test_commands_that_write_into_a_run_never_default_to_the_shipped_model(command):
    result = clothclf(command)
    assert result.returncode == 2
    assert "the following arguments are required: --model" in result.stderr.decode()


def test_top_k_below_one_is_one_line():
    result = clothclf("predict", "--top-k", "0", "photo.jpg")
    assert result.returncode == 2
    assert "argument --top-k: must be at least 1, not 0" in result.stderr.decode()


def test_evaluate_takes_the_dataset_from_the_environment(tiny_run, synthetic_dataset, monkeypatch, capsys):
    monkeypatch.setenv("CLOTHCLF_DATA_DIR", str(synthetic_dataset))
    assert main(["evaluate", "--model", str(tiny_run), "--split", "test", "--no-save", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 12
    monkeypatch.setenv("CLOTHCLF_DATA_DIR", str(synthetic_dataset / "nowhere"))
    assert main(["evaluate", "--model", str(tiny_run), "--no-save"]) == 1
    assert "pass --data DIR or set CLOTHCLF_DATA_DIR" in capsys.readouterr().err


def test_predict_into_a_closed_pipe_exits_quietly(tmp_path):
    files = photos(tmp_path / "photos", [f"p{i}.png".encode() for i in range(3)])
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-m", "clothclf", "predict", "--model", str(SHIPPED_MODEL), *files]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment) as child:
        child.stdout.close()  # the reader is gone before the first line (``… | head -0``)
        stderr = child.stderr.read()
        assert child.wait(timeout=120) == CLOSED_PIPE_EXIT
    assert stderr == b""


def test_file_names_that_are_not_utf8_are_printed_and_every_file_is_classified(tmp_path):
    odd, plain = photos(tmp_path / "photos", [b"caf\xe9.png", b"plain.png"])
    result = clothclf("predict", "--model", str(SHIPPED_MODEL), odd, plain, env={"PYTHONIOENCODING": "utf-8"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 2 and "caf\\udce9.png: " in lines[0] and "plain.png: " in lines[1]
    assert b"Traceback" not in result.stderr and b"XNNPACK" not in result.stderr  # nor LiteRT's notes


@pytest.mark.slow
def test_tensorflow_log_lines_are_hidden_unless_verbose(tiny_run, synthetic_dataset):
    # The Keras backend imports TensorFlow, which writes its native log lines unless told otherwise.
    args = [
        "evaluate",
        "--model",
        str(tiny_run),
        "--data",
        str(synthetic_dataset),
        "--no-save",
        "--backend",
        "keras",
    ]
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run(
        [sys.executable, "-m", "clothclf", *args], capture_output=True, env=environment, timeout=300
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == b""
