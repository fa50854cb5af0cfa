"""JSON output is strict JSON for any file name: a name whose bytes are not UTF-8 is written with U+FFFD
and its exact bytes in ``file_bytes_base64``, never as a lone surrogate (``\\udce9``)."""

from __future__ import annotations

import base64
import json
import os

import numpy as np
from helpers import PROJECT_ROOT, make_image

from clothclf.cli import main
from clothclf.serving.result_files import FILE_BYTES, json_line, open_result_file, row_of_json

LATIN1 = b"caf\xe9 \xff.png"  # a name from an old Latin-1 system; Python reads it with surrogates


def strict_json(line: str) -> dict:
    """Parse ``line`` as a strict reader does: UTF-8 text, and no string holding a lone surrogate."""
    line.encode("utf-8")  # raises for a lone surrogate in the text itself
    value = json.loads(line)
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # raises for one written as \udcxx
    return value


def test_a_name_that_is_not_utf8_is_replaced_and_kept_as_bytes():
    name = os.fsdecode(b"/photos/" + LATIN1)
    row = strict_json(json_line({"file": name, "error": f"{name}: not an image format clothclf reads"}))
    assert row["file"] == "/photos/caf\ufffd \ufffd.png"
    assert row["error"].startswith("/photos/caf\ufffd \ufffd.png: ")
    assert base64.b64decode(row[FILE_BYTES]) == b"/photos/" + LATIN1
    assert row_of_json(json_line({"file": name}))["file"] == name


def test_utf8_names_are_written_as_they_are():
    row = strict_json(json_line({"file": "/photos/café 👕.png", "label": "shirt"}))
    assert row == {"file": "/photos/café 👕.png", "label": "shirt"}


def test_a_jsonl_file_resumes_past_a_name_that_is_not_utf8(tmp_path):
    name = os.fsdecode(LATIN1)
    path = tmp_path / "rows.jsonl"
    rows = open_result_file(path)
    rows.write({"file": name, "error": "x"})
    rows.close()
    strict_json(path.read_bytes().decode("utf-8"))
    resumed = open_result_file(path, resume=True)
    assert resumed.done == {name}
    resumed.close()


def test_cli_predict_json_prints_strict_json_for_such_a_name(tmp_path, capsys):
    path = tmp_path / os.fsdecode(LATIN1)
    make_image(0, np.random.default_rng(0), size=32).save(path, format="PNG")
    model = PROJECT_ROOT / "models" / "default"
    assert main(["predict", "--model", str(model), str(path), "--json"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    row = strict_json(line)
    assert row["file"].endswith("caf\ufffd \ufffd.png") and "label" in row
    assert os.fsdecode(base64.b64decode(row[FILE_BYTES])) == str(path)
