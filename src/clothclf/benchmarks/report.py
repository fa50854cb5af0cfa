"""The serving benchmark's results as a Markdown table with the targets they meet."""

from __future__ import annotations

from clothclf.benchmarks.serving import MIN_TARGETS, TARGETS


def check(value: float, target: float) -> str:
    """``yes`` if ``value`` is within the upper bound ``target``."""
    return "yes" if value <= target else "**no**"


def check_min(value: float, name: str) -> str:
    """The lower bound ``MIN_TARGETS[name]`` and whether ``value`` meets it."""
    return f">= {MIN_TARGETS[name]:.2f}: " + ("yes" if value >= MIN_TARGETS[name] else "**no**")


def catalog_rows(lite: dict, catalog: dict | None) -> list[tuple[str, str, str]]:
    """Throughput against the raw forward pass: one photo x 64, then a catalog of different photos."""
    ratio = lite["images_per_s"]["predict_batch(64)"] * lite["forward"]["p50"] / 1e3
    rows = [
        (
            "LiteRT, predict_batch(64) images/s x raw forward p50",
            f"{ratio:.2f}",
            check_min(ratio, "batch_x_forward"),
        )
    ]
    if catalog:
        m, n = catalog["median"], catalog["photos"]
        turns = ", ".join(f"{t['batch_x_forward']:.2f}" for t in catalog["turns"])
        cli = ", ".join(f"{t['cli_over_batch']:.2f}" for t in catalog["turns"])
        rows += [
            (
                f"Catalog of {n} dataset photos: `predict_batch`",
                f"{m['predict_batch_per_s']:.0f} photos/s",
                "",
            ),
            (f"Catalog: raw forward p50, {catalog['threads']} threads", f"{m['forward_ms']:.1f} ms", ""),
            (
                "**Catalog: `predict_batch` photos/s x raw forward (median of turns)**",
                f"{m['batch_x_forward']:.2f} (turns: {turns})",
                check_min(m["batch_x_forward"], "batch_x_forward"),
            ),
            (
                "Catalog: `clothclf predict FOLDER --out x.csv`, whole process",
                f"{m['cli_per_s']:.0f} photos/s, peak RSS {m['cli_peak_rss_mb']:.0f} MB",
                "",
            ),
            (
                "**Catalog: CLI / `predict_batch` (median of turns)**",
                f"{m['cli_over_batch']:.2f} (turns: {cli})",
                check_min(m["cli_over_batch"], "cli_over_batch"),
            ),
            *_cpu_budget_rows(catalog["cpu"], catalog["threads"]),
        ]
    return rows


def _cpu_budget_rows(cpu: dict[str, float], threads: int) -> list[tuple[str, str, str]]:
    """Where a photo's CPU goes in the catalog, and the ratio to the raw forward pass it allows."""
    rest = cpu["per_photo_ms"] - cpu["decode_resize_ms"] - cpu["forward_1_thread_ms"]
    return [
        (
            "Catalog: CPU per photo, one worker: all / decode + resize / forward (1 thread) / the rest",
            f"{cpu['per_photo_ms']:.2f} / {cpu['decode_resize_ms']:.2f} / "
            f"{cpu['forward_1_thread_ms']:.2f} / {rest:.2f} ms",
            "",
        ),
        (
            f"Catalog: ceiling on this CPU, {threads} cores x raw forward / CPU per photo "
            "(forward pass alone: cores x raw forward / forward on 1 thread)",
            f"{cpu['ceiling']:.2f} ({cpu['forward_only_ceiling']:.2f})",
            "",
        ),
    ]


def ms(s: dict[str, float]) -> str:
    """``p50 / p95 / min ms``."""
    return f"{s['p50']:.1f} / {s['p95']:.1f} / {s['min']:.1f} ms"


def _litert_rows(lite: dict, catalog: dict | None) -> list[tuple[str, str, str]]:
    """The warm in-process LiteRT rows: latency, its parts, throughput, the catalog."""
    p50, ratio = lite["latency"]["p50"], lite["latency_over_forward"]
    rows = [
        (
            "**LiteRT, warm, one JPEG: decode + resize + forward (no TTA)**",
            ms(lite["latency"]),
            f"p50 <= {TARGETS['latency_p50_ms']:.0f} ms: {check(p50, TARGETS['latency_p50_ms'])}",
        ),
        ("LiteRT, decode + resize only", ms(lite["decode_resize"]), ""),
        (f"LiteRT, raw forward (`invoke` only), {lite['num_threads']} threads", ms(lite["forward"]), ""),
        (
            "LiteRT, latency / raw forward (p50)",
            f"{ratio:.2f}x",
            f"<= {TARGETS['latency_over_forward']:.0f}x: {check(ratio, TARGETS['latency_over_forward'])}",
        ),
        ("LiteRT, warm, one JPEG, `num_threads=1`", ms(lite["latency_1_thread"]), ""),
        (
            "LiteRT, warm, one JPEG, with TTA (+ mirror image)"
            + (", this model's default" if lite["tta_default"] else ""),
            ms(lite["latency_tta"]),
            "",
        ),
    ]
    rows += [
        (f"LiteRT throughput, {name}", f"{v:.0f} images/s", "") for name, v in lite["images_per_s"].items()
    ]
    return rows + catalog_rows(lite, catalog)


def _int8_rows(int8: dict | None) -> list[tuple[str, str, str]]:
    """The float32 / int8 comparison rows (none without an int8 model)."""
    if not int8:
        return []
    forward, rates = int8["forward"], int8["images_per_s"]
    return [
        (
            "int8 variant: raw forward p50, float32 / int8",
            f"{forward['float32']['p50']:.1f} / {forward['int8']['p50']:.1f} ms",
            "",
        ),
        (
            "int8 variant: predict_batch(64), float32 / int8",
            f"{rates['float32']:.0f} / {rates['int8']:.0f} images/s",
            "",
        ),
    ]


def _fresh_process_rows(serve: dict) -> list[tuple[str, str, str]]:
    """The rows of a fresh LiteRT serving process: cold start, peak memory, no TensorFlow."""
    return [
        (
            "LiteRT, fresh process: import (numpy, Pillow, LiteRT) / load / first prediction",
            f"{serve['import_s']:.2f} / {serve['load_s']:.2f} / {serve['first_prediction_s']:.2f} s",
            "",
        ),
        (
            "**LiteRT, fresh process: import + load + first prediction**",
            f"{serve['cold_start_s']:.2f} s",
            f"<= {TARGETS['cold_start_s']:.0f} s: {check(serve['cold_start_s'], TARGETS['cold_start_s'])}",
        ),
        ("LiteRT, fresh process: wall time from launch to exit", f"{serve['process_wall_s']:.2f} s", ""),
        (
            "**LiteRT, fresh process: peak RSS**",
            f"{serve['peak_rss_mb']:.0f} MB",
            f"<= {TARGETS['peak_rss_mb']:.0f} MB: {check(serve['peak_rss_mb'], TARGETS['peak_rss_mb'])}",
        ),
        (
            "LiteRT, fresh process: TensorFlow or Keras imported",
            "yes" if serve["tensorflow_imported"] else "no",
            "must be no: " + ("**no**" if serve["tensorflow_imported"] else "yes"),
        ),
    ]


def _keras_rows(keras: dict | None) -> list[tuple[str, str, str]]:
    """The Keras rows (none when Keras was not measured)."""
    if not keras:
        return []
    return [
        ("Keras, warm, one JPEG: decode + `model.predict`", f"{keras['predict_p50_ms']:.1f} ms (p50)", ""),
        (
            "Keras, warm, `predict_on_batch` of one decoded image",
            f"{keras['predict_on_batch_p50_ms']:.1f} ms (p50)",
            "",
        ),
        ("Keras, fresh process: import + load + first prediction", f"{keras['cold_start_s']:.2f} s", ""),
        ("Keras, fresh process: peak RSS", f"{keras['peak_rss_mb']:.0f} MB", ""),
    ]


def markdown(result: dict) -> str:
    """The benchmark's results as a Markdown table, then the machine it ran on."""
    rows = [
        *_litert_rows(result["litert"], result.get("catalog")),
        *_int8_rows(result.get("int8")),
        *_fresh_process_rows(result["serve"]),
        *_keras_rows(result["keras"]),
    ]
    env = result["environment"]
    lines = [
        "| Measurement (latencies: p50 / p95 / min) | Value | Target met |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
        f"Model: {env['model']}. Image: {env['image']}. {env['cpus']} CPUs ({env['processor']}), "
        f"load average {env['load_before']:.1f} before the run; Python {env['python']}, LiteRT {env['litert']}.",
    ]
    return "\n".join(lines)
