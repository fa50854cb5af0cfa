"""The serving benchmark (``python scripts/benchmark.py``): LiteRT latency, its parts and throughput,
a fresh process's start-up and memory, the int8 variant, a catalog of dataset photos against the raw
forward pass and where a photo's CPU goes, and the Keras baseline. This process never imports
TensorFlow: the Keras baseline and the stand-in model run in fresh processes.
"""

from __future__ import annotations

import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from clothclf.benchmarks.timing import (
    PACKAGE_ROOT,
    cpu_name,
    cpu_seconds,
    images_per_s,
    package_version,
    peak_rss_mb,
    run_script,
    stats,
    timings_ms,
)
from clothclf.config import Paths
from clothclf.data.images import load_image
from clothclf.runs import INT8_MODEL, KERAS_MODEL, LITERT_MODEL
from clothclf.serving.classifier import load_classifier
from clothclf.serving.runtime import available_cpus

#: Upper bounds of the latency, start-up and memory targets.
TARGETS = {
    "latency_p50_ms": 15.0,
    "latency_over_forward": 2.0,
    "cold_start_s": 2.0,
    "peak_rss_mb": 350.0,
}
#: Lower bounds: batch throughput against the model's own limit, and the CLI against predict_batch.
MIN_TARGETS = {"batch_x_forward": 0.85, "cli_over_batch": 0.85}


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


# --- in-process LiteRT measurements ------------------------------------------------------------------


def raw_forward(model_dir: Path, num_threads: int, name: str = LITERT_MODEL) -> Callable[[], None]:
    """``Interpreter.invoke`` alone, on an input already in place."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_dir / name), num_threads=num_threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], np.float32))
    return interpreter.invoke


def threaded(classifier, data: bytes, threads: int = 8, images: int = 64) -> Callable[[], None]:
    """``threads`` threads sharing ``classifier``, classifying ``images`` copies of ``data``."""

    def run() -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda _: classifier.predict(data), range(images)))

    return run


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
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(PACKAGE_ROOT)}
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


def _photo_description(data: bytes, source: str) -> str:
    with Image.open(io.BytesIO(data)) as opened:
        return source + f" ({opened.width}x{opened.height}, {len(data) / 1024:.0f} KB)"


def _model_to_measure(model: Path | None, tmp: Path, say: Callable[[str], object]) -> tuple[Path, str]:
    """The model folder to measure and its description: ``model``, else the shipped one, else a
    stand-in of the shipped architecture built in ``tmp``."""
    model_dir = model or Paths.from_env().default_model_dir
    described = str(model_dir)
    if model is None and not (model_dir / LITERT_MODEL).is_file():
        model_dir = tmp / "standin"
        say(f"no model in {described}: building a MobileNetV2 224 px stand-in ...")
        run_script(BUILD_SCRIPT, str(model_dir))
        described = "stand-in MobileNetV2 224 px (ImageNet weights, untrained 10-class head)"
    if not (model_dir / LITERT_MODEL).is_file():
        raise ValueError(f"{model_dir} has no model.tflite (run `clothclf export --model {model_dir}`)")
    return model_dir, described


def run_benchmark(
    model: Path | None = None,
    image: Path | None = None,
    repeats: int = 200,
    catalog_size: int = 1000,
    keras: bool = True,
    say: Callable[[str], object] = lambda _: None,
) -> dict:
    """Every measurement of the serving benchmark, as one dict (:func:`clothclf.benchmarks.report.markdown`
    prints it). ``catalog_size`` dataset photos for the catalog turns (0: skip); ``say`` hears progress."""
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="clothclf-bench-") as tmp:
        model_dir, described = _model_to_measure(model, Path(tmp), say)
        data, source = find_image(image)
        photo = Path(tmp) / "photo.jpg"
        photo.write_bytes(data)
        photos = catalog_photos(catalog_size)
        return {
            "environment": {
                "model": described,
                "image": _photo_description(data, source),
                "cpus": available_cpus(),
                "processor": cpu_name(),
                "python": platform.python_version(),
                "litert": package_version("ai-edge-litert"),
                "load_before": load_before,
            },
            "serve": run_script(SERVE_SCRIPT, str(model_dir), str(photo)),
            "litert": benchmark(model_dir, data, repeats),
            "int8": int8(model_dir, data, repeats),
            "catalog": catalog(model_dir, photos) if photos else None,
            "keras": run_script(KERAS_SCRIPT, str(model_dir), str(photo))
            if keras and (model_dir / KERAS_MODEL).is_file()
            else None,
        }
