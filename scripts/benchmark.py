"""Benchmark serving on this machine: latency, throughput, start-up time and memory, LiteRT vs Keras.

    python scripts/benchmark.py                 # the shipped model, models/default
    python scripts/benchmark.py --model DIR     # any run folder with model.tflite (+ model.keras)
    python scripts/benchmark.py --json          # machine-readable

Without a model at ``models/default`` it builds a stand-in of the same architecture (MobileNetV2,
224 px, ImageNet weights from the Keras cache, e.g. ``KERAS_HOME=/work/shared/keras``) in a
temporary folder. The test photo is ``--image``, else the first JPEG of the default dataset's test
split, else a synthesized 400x533 JPEG. Start-up and the Keras baseline are measured in fresh
subprocesses (small scripts run with ``python -c``); this process never imports TensorFlow.
This is a measurement, not a test: numbers depend on the machine and on what else is running.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from clothclf.config import Paths  # noqa: E402
from clothclf.data.images import load_image  # noqa: E402
from clothclf.runs import INT8_MODEL, KERAS_MODEL, LITERT_MODEL  # noqa: E402
from clothclf.serving.classifier import load_classifier  # noqa: E402
from clothclf.serving.runtime import available_cpus  # noqa: E402

TARGETS = {
    "latency_p50_ms": 15.0,
    "latency_over_forward": 2.0,
    "cold_start_s": 2.0,
    "peak_rss_mb": 350.0,
}
#: Lower bounds: batch throughput against the model's own limit, and the CLI against predict_batch.
MIN_TARGETS = {"batch_x_forward": 0.85, "cli_over_batch": 0.85}


def timings_ms(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 5) -> dict[str, np.ndarray]:
    """Wall-clock milliseconds of ``repeats`` calls of each function, after ``warmup`` untimed ones.

    The functions take turns, so whatever else runs on the machine slows them all alike.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: np.empty(repeats) for name in fns}
    for i in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name][i] = (time.perf_counter() - start) * 1e3
    return times


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def peak_rss_mb() -> float:
    """Peak resident memory of this process (``ru_maxrss`` is KB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def synthetic_jpeg(width: int = 400, height: int = 533, seed: int = 0) -> bytes:
    """A photo-like JPEG (a lit garment-shaped blob on a soft background, sensor noise), quality 90."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    background = 200 + 30 * (y / height)[..., None] * np.array([1.0, 0.9, 0.8])
    blob = ((x - width / 2) / (width * 0.3)) ** 2 + ((y - height / 2) / (height * 0.38)) ** 2 < 1
    shade = 60 + 90 * np.sin(x / 17.0) ** 2 * np.cos(y / 23.0) ** 2
    garment = np.stack([shade * 0.5, shade * 0.7, shade * 1.2], axis=-1)
    pixels = np.where(blob[..., None], garment, background) + rng.normal(0, 4, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def find_image(explicit: Path | None) -> tuple[bytes, str]:
    """The benchmark photo and where it came from."""
    if explicit is not None:
        return explicit.read_bytes(), str(explicit)
    test_dir = Paths.from_env().default_dataset_dir / "test"
    found = next(iter(sorted(test_dir.rglob("*.jpg"))), None) if test_dir.is_dir() else None
    if found is not None:
        return found.read_bytes(), str(found)
    return synthetic_jpeg(), "synthesized 400x533 JPEG"


# --- fresh processes: each runs one of these scripts and prints one JSON line ------------------------
# They are plain code (not functions of this module) so nothing is imported before the clock starts.

_PEAK_RSS_MB = (
    "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == 'darwin' else 1024)"
)

SERVE_SCRIPT = f"""
import json, resource, sys, time
start = time.perf_counter()
import clothclf.serving.classifier
imported = time.perf_counter()
classifier = clothclf.load_classifier(sys.argv[1], backend="litert")
loaded = time.perf_counter()
classifier.predict(sys.argv[2])
first = time.perf_counter()
print(json.dumps({{
    "import_s": imported - start,
    "load_s": loaded - imported,
    "first_prediction_s": first - loaded,
    "cold_start_s": first - start,
    "peak_rss_mb": {_PEAK_RSS_MB},
    "tensorflow_imported": any(m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules),
}}))
"""

KERAS_SCRIPT = f"""
import json, resource, sys, time
start = time.perf_counter()
import numpy as np
from clothclf.data.images import load_image
from clothclf.modeling.models import load_model
imported = time.perf_counter()
from clothclf.runs import KERAS_MODEL
model = load_model(sys.argv[1] + "/" + KERAS_MODEL)
loaded = time.perf_counter()
size = int(model.input_shape[1])
predict = lambda: model.predict(load_image(sys.argv[2], size)[None].astype(np.float32), verbose=0)
predict()
first = time.perf_counter()
pixels = load_image(sys.argv[2], size)[None].astype(np.float32)
def p50(fn, n=30):
    for _ in range(3):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)
print(json.dumps({{
    "import_s": imported - start,
    "load_s": loaded - imported,
    "first_prediction_s": first - loaded,
    "cold_start_s": first - start,
    "predict_p50_ms": p50(predict),
    "predict_on_batch_p50_ms": p50(lambda: model.predict_on_batch(pixels)),
    "peak_rss_mb": {_PEAK_RSS_MB},
}}))
"""

BUILD_SCRIPT = """
import json, sys
from pathlib import Path
from clothclf.serving.export import export_tflite
from clothclf.modeling.models import build_model
from clothclf.runs import CLASS_NAMES, KERAS_MODEL, LITERT_MODEL
model_dir = Path(sys.argv[1])
model_dir.mkdir(parents=True, exist_ok=True)
model = build_model("mobilenet_v2", 10, 224, "imagenet")  # the shipped architecture, untrained head
model.save(model_dir / KERAS_MODEL)
export_tflite(model, model_dir / LITERT_MODEL)
(model_dir / CLASS_NAMES).write_text(json.dumps([f"class_{i}" for i in range(10)]))
print(json.dumps({"built": str(model_dir)}))
"""


def run_script(script: str, *args: str) -> dict:
    """Run ``script`` in a fresh Python process; its last stdout line as JSON, plus its wall time."""
    started = time.perf_counter()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"a benchmark subprocess failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - started
    return result


# --- in-process LiteRT measurements ------------------------------------------------------------------


def raw_forward(model_dir: Path, num_threads: int, name: str = LITERT_MODEL) -> Callable[[], None]:
    """``Interpreter.invoke`` alone, on an input already in place."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_dir / name), num_threads=num_threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], np.float32))
    return interpreter.invoke


def images_per_s(fns: dict[str, Callable[[], object]], images: int) -> dict[str, float]:
    """Images per second of calls that each classify ``images`` images (best of 3 turns)."""
    return {name: images / t.min() * 1e3 for name, t in timings_ms(fns, 3, warmup=1).items()}


def threaded(classifier, data: bytes, threads: int = 8, images: int = 64) -> Callable[[], None]:
    """``threads`` threads sharing ``classifier``, classifying ``images`` copies of ``data``."""

    def run() -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda _: classifier.predict(data), range(images)))

    return run


def stats(times: np.ndarray) -> dict[str, float]:
    return {"p50": float(np.median(times)), "p95": float(np.percentile(times, 95)), "min": float(times.min())}


def benchmark(model_dir: Path, data: bytes, repeats: int) -> dict:
    """Every in-process LiteRT measurement (none of them imports TensorFlow)."""
    threads = available_cpus()

    def classifier(**kwargs):
        return load_classifier(model_dir, backend="litert", **{"tta": False, **kwargs})

    default, one_thread, tta = classifier(), classifier(num_threads=1), classifier(tta=True)
    size = default.image_size
    times = timings_ms(
        {
            "latency": lambda: default.predict(data),
            "decode_resize": lambda: load_image(data, size),
            "forward": raw_forward(model_dir, threads),
            "latency_1_thread": lambda: one_thread.predict(data),
            "latency_tta": lambda: tta.predict(data),
        },
        repeats,
    )
    batch = [data] * 64
    throughputs = images_per_s(
        {
            "predict_batch(64)": lambda: default.predict_batch(batch),
            "predict_batch(64), 1 thread": lambda: one_thread.predict_batch(batch),
            **{f"8 threads, pool_size={n}": threaded(classifier(pool_size=n), data) for n in (1, 2, 4)},
        },
        len(batch),
    )
    return {
        "image_size": size,
        "num_threads": threads,
        "tta_default": load_classifier(model_dir, backend="litert").tta,
        **{name: stats(t) for name, t in times.items()},
        "latency_over_forward": float(np.median(times["latency"]) / np.median(times["forward"])),
        "images_per_s": throughputs,
        "in_process_peak_rss_mb": peak_rss_mb(),
    }


def int8(model_dir: Path, data: bytes, repeats: int) -> dict | None:
    """The full-integer ``model_int8.tflite`` (``clothclf export --int8``) against the float model, if any."""
    if not (model_dir / INT8_MODEL).is_file():
        return None
    threads = available_cpus()
    float32, int8 = (load_classifier(model_dir, backend=b, tta=False) for b in ("litert", "litert-int8"))
    times = timings_ms(
        {
            "float32": raw_forward(model_dir, threads),
            "int8": raw_forward(model_dir, threads, INT8_MODEL),
        },
        repeats,
    )
    batch = [data] * 64
    rates = images_per_s(
        {"float32": lambda: float32.predict_batch(batch), "int8": lambda: int8.predict_batch(batch)},
        len(batch),
    )
    return {"forward": {name: stats(t) for name, t in times.items()}, "images_per_s": rates}


# --- a catalog: many different photos, in this process and through the CLI --------------------------


def catalog_photos(count: int) -> list[Path]:
    """``count`` photos spread evenly over the default dataset (every split), or none without it."""
    root = Paths.from_env().default_dataset_dir
    found = sorted(root.rglob("*.jpg")) if root.is_dir() and count > 0 else []
    return found[:: max(1, len(found) // count)][:count] if found else []


def cli_photos_per_s(model_dir: Path, folder: Path, out: Path, count: int) -> tuple[float, float]:
    """Photos/s of ``clothclf predict FOLDER --out x.csv`` over the whole process, and its peak RSS in MB."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(PROJECT_ROOT)}
    command = [
        sys.executable,
        "-m",
        "clothclf",
        "predict",
        "--model",
        str(model_dir),
        str(folder),
        "--out",
        str(out),
    ]
    script = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); print("
        + _CHILD_RSS
        + ")"
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, *command], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"clothclf predict failed:\n{done.stderr}")
    return count / seconds, float(done.stdout.strip().splitlines()[-1])


_CHILD_RSS = "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024"


def catalog(model_dir: Path, photos: list[Path], turns: int = 3) -> dict:
    """predict_batch and the CLI on the same photos, and the raw forward pass, taking turns.

    Each turn times 50 raw forward passes (median), ``predict_batch`` over every photo, then a fresh
    ``clothclf predict FOLDER --out x.csv`` process (start-up, listing and writing included); the
    ratios are per turn, so load from other processes affects both sides of each alike.
    """
    threads = available_cpus()
    classifier = load_classifier(model_dir, backend="litert", tta=False)
    forward = raw_forward(model_dir, threads)
    files = [str(p) for p in photos]
    classifier.predict_batch(files[:32])
    turns_out = []
    with tempfile.TemporaryDirectory(prefix="clothclf-catalog-") as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for i, photo in enumerate(photos):
            (folder / f"{i:06d}{photo.suffix}").write_bytes(photo.read_bytes())
        for turn in range(turns):
            forward_ms = float(np.median(timings_ms({"forward": forward}, 50, warmup=3)["forward"]))
            start = time.perf_counter()
            classifier.predict_batch(files)
            batch_rate = len(files) / (time.perf_counter() - start)
            cli_rate, cli_rss = cli_photos_per_s(model_dir, folder, Path(tmp) / f"rows{turn}.csv", len(files))
            turns_out.append(
                {
                    "forward_ms": forward_ms,
                    "predict_batch_per_s": batch_rate,
                    "cli_per_s": cli_rate,
                    "cli_peak_rss_mb": cli_rss,
                    "batch_x_forward": batch_rate * forward_ms / 1e3,
                    "cli_over_batch": cli_rate / batch_rate,
                }
            )
    median = {key: float(np.median([t[key] for t in turns_out])) for key in turns_out[0]}
    budget = cpu_budget(classifier, model_dir, files[:CPU_BUDGET_PHOTOS])
    budget["ceiling"] = threads * median["forward_ms"] / budget["per_photo_ms"]
    budget["forward_only_ceiling"] = threads * median["forward_ms"] / budget["forward_1_thread_ms"]
    return {"photos": len(files), "threads": threads, "turns": turns_out, "median": median, "cpu": budget}


#: Photos the CPU budget is measured on, in rounds (one worker, one thread: about 3 s in all).
CPU_BUDGET_PHOTOS = 200
CPU_BUDGET_ROUNDS = 5


def cpu_seconds(call: Callable[[], object]) -> float:
    """CPU seconds the whole process spends in ``call`` (every thread)."""
    start = time.process_time()
    call()
    return time.process_time() - start


def cpu_budget(classifier, model_dir: Path, files: list[str]) -> dict[str, float]:
    """CPU ms per photo of the catalog's work, one worker on one thread: all of it (``predict_stream``
    with one worker), decoding and resizing alone, and one single-threaded forward pass; medians of
    rounds that take the three in turn on the same photos, so a change in the machine's speed during
    the run affects all three alike. A catalog that keeps every core busy classifies at most
    cores / (CPU per photo) photos a second, so ``cores x raw forward / CPU per photo`` bounds its
    ratio to the raw forward pass on this machine."""
    forward = raw_forward(model_dir, 1)
    list(classifier.predict_stream(files[:16], workers=1))  # warm the single-threaded interpreter
    size = max(1, len(files) // CPU_BUDGET_ROUNDS)

    def one_round(part: list[str]) -> list[float]:
        return [
            cpu_seconds(lambda: list(classifier.predict_stream(part, workers=1))),
            cpu_seconds(lambda: [classifier.load(f) for f in part]),
            cpu_seconds(lambda: [forward() for _ in part]),
        ]

    starts = range(0, size * min(CPU_BUDGET_ROUNDS, len(files)), size)
    rounds = [one_round(files[start : start + size]) for start in starts]
    whole, decode, one = np.median(np.asarray(rounds), axis=0) * 1e3 / size
    return {"per_photo_ms": whole, "decode_resize_ms": decode, "forward_1_thread_ms": one}


# --- report ------------------------------------------------------------------------------------------


def check(value: float, target: float) -> str:
    return "yes" if value <= target else "**no**"


def check_min(value: float, name: str) -> str:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="run folder with model.tflite (default: models/default)")
    parser.add_argument("--image", type=Path, help="photo to classify (default: see the module docstring)")
    parser.add_argument("--repeats", type=int, default=200, help="timed single-image calls")
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras baseline")
    parser.add_argument(
        "--catalog-photos", type=int, default=1000, help="dataset photos for the catalog turns (0: skip)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="clothclf-bench-") as tmp:
        model_dir = args.model or Paths.from_env().default_model_dir
        described = str(model_dir)
        if args.model is None and not (model_dir / LITERT_MODEL).is_file():
            model_dir = Path(tmp) / "standin"
            print(f"no model in {described}: building a MobileNetV2 224 px stand-in ...", file=sys.stderr)
            run_script(BUILD_SCRIPT, str(model_dir))
            described = "stand-in MobileNetV2 224 px (ImageNet weights, untrained 10-class head)"
        if not (model_dir / LITERT_MODEL).is_file():
            parser.error(f"{model_dir} has no model.tflite (run `clothclf export --model {model_dir}`)")
        data, source = find_image(args.image)
        image = Path(tmp) / "photo.jpg"
        image.write_bytes(data)
        with Image.open(io.BytesIO(data)) as opened:
            source += f" ({opened.width}x{opened.height}, {len(data) / 1024:.0f} KB)"
        result = {
            "environment": {
                "model": described,
                "image": source,
                "cpus": available_cpus(),
                "processor": cpu_name(),
                "python": platform.python_version(),
                "litert": _version("ai-edge-litert"),
                "load_before": load_before,
            },
            "serve": run_script(SERVE_SCRIPT, str(model_dir), str(image)),
            "litert": benchmark(model_dir, data, args.repeats),
            "int8": int8(model_dir, data, args.repeats),
            "catalog": catalog(model_dir, photos)
            if (photos := catalog_photos(args.catalog_photos))
            else None,
            "keras": None
            if args.no_keras or not (model_dir / KERAS_MODEL).is_file()
            else run_script(KERAS_SCRIPT, str(model_dir), str(image)),
        }
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
