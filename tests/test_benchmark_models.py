"""The side-by-side latency comparison on a tiny run: one row per entry, backends resolved, ratios to the first."""

from __future__ import annotations

import io

from helpers import make_image

from clothclf.benchmarks.models import ServedModel, compare_latency, markdown


def test_compare_latency_rows_and_ratios(tiny_run):
    import numpy as np

    buffer = io.BytesIO()
    make_image(0, np.random.default_rng(0)).save(buffer, format="PNG")
    models = [ServedModel(tiny_run), ServedModel(tiny_run, "keras")]
    result = compare_latency(models, buffer.getvalue(), repeats=3)
    first, second = result["models"]
    assert first["ratio"] == 1.0 and first["backend"] == "litert" and second["backend"] == "keras"
    assert first["image_size"] == 32 and all(row["p50_ms"] > 0 for row in result["models"])
    assert abs(second["ratio"] - second["p50_ms"] / first["p50_ms"]) < 0.02
    table = markdown(result)
    assert "| p50 ms |" in table and f"| {tiny_run} | keras | 32 |" in table
