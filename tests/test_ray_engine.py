"""The Ray engine on a local Ray instance (two CPUs): the same rows as the local engine, read by the workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import PROJECT_ROOT, make_image

from clothclf.serving.batch import predict_catalog

# Ray's start-up, one actor per CPU and the run; a hung cluster fails the test instead of the CI.
SCRIPT = """
import sys, ray
ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
from clothclf.cli import main
code = main(["predict", "--engine", "ray", "--model", sys.argv[1], "--top-k", "2", "--out", sys.argv[2], *sys.argv[3:]])
ray.shutdown()
sys.exit(code)
"""


@pytest.mark.slow
def test_ray_engine_gives_the_local_engines_rows(tiny_run, tmp_path):
    folder = tmp_path / "photos"
    rng = np.random.default_rng(5)
    for i in range(10):
        (folder / f"part{i % 2}").mkdir(parents=True, exist_ok=True)
        make_image(i % 3, rng).save(folder / f"part{i % 2}" / f"photo{i}.png")
    (folder / "part1" / "broken.jpg").write_bytes(b"not an image")
    local = tmp_path / "local.jsonl"
    predict_catalog([folder], local, model_dir=tiny_run, top_k=2)

    out = tmp_path / "ray.jsonl"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "RAY_ADDRESS": ""}
    # The folder as a file:// URI: listed and read through pyarrow's filesystems, as object storage is.
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_run), str(out), f"file://{folder}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-3000:]  # broken.jpg failed
    assert "10 classified, 1 failed" in done.stderr
    want = [json.loads(line) for line in local.read_text().splitlines()]
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["file"] for row in got] == [f"file://{row['file']}" for row in want]
    for a, b in zip(want, got):
        assert a.get("label") == b.get("label") and ("error" in a) == ("error" in b)
        if "confidence" in a:
            assert b["confidence"] == pytest.approx(a["confidence"], abs=1e-5)
