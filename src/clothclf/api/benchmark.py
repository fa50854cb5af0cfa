"""Measuring the HTTP API against the library: 8 concurrent clients on loopback vs in-process ``predict_batch``.

:func:`run_benchmark` starts ``clothclf serve`` in a subprocess on a free port of 127.0.0.1, and in
alternating rounds classifies the same photos (a) in this process with
:meth:`~clothclf.serving.classifier.Classifier.predict_batch` and (b) through the server, the photos
split over ``clients`` threads that each post theirs one at a time on a kept-alive connection. It
reports both rates (photos per second of wall time), their ratio, every status the server answered,
the server's peak resident memory (``VmHWM`` from ``/proc``, Linux only), whether TensorFlow's
libraries are mapped into the server process, and the server's own batch counts. The figures depend
on the machine and on what else runs on it.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from clothclf.api.uploads import FILE_FIELD
from clothclf.data.datasets import IMAGE_EXTENSIONS
from clothclf.serving.classifier import load_classifier

BOUNDARY = "clothclf-benchmark"


@dataclass(frozen=True)
class BenchmarkResult:
    """What :func:`run_benchmark` measured (rates in photos per second, one per round)."""

    photos: int
    clients: int
    in_process: list[float]
    server: list[float]
    statuses: dict[int, int]
    server_peak_rss_mb: float
    tensorflow_loaded: bool
    batches: int
    batched_photos: int
    in_process_cpu_ms: float
    server_cpu_ms: float
    load_average: float

    @property
    def ratio(self) -> float:
        """Median server rate over median in-process rate."""
        return statistics.median(self.server) / statistics.median(self.in_process)

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 3)}

    def lines(self) -> list[str]:
        """The result for people, one figure a line."""
        rates = ", ".join
        return [
            f"{self.photos} photos per round, {len(self.server)} rounds, {self.clients} concurrent clients",
            f"in-process predict_batch: {rates(f'{r:.1f}' for r in self.in_process)} photos/s",
            f"HTTP API (8 clients):     {rates(f'{r:.1f}' for r in self.server)} photos/s",
            f"ratio (medians): {self.ratio:.2f}",
            f"statuses: {dict(sorted(self.statuses.items()))}",
            f"server peak RSS: {self.server_peak_rss_mb:.0f} MB",
            f"tensorflow loaded in the server: {'yes' if self.tensorflow_loaded else 'no'}",
            f"server batches: {self.batches} for {self.batched_photos} photos "
            f"({self.batched_photos / max(self.batches, 1):.1f} photos per forward pass)",
            f"CPU per photo: in-process {self.in_process_cpu_ms:.1f} ms, server {self.server_cpu_ms:.1f} ms",
            f"load average (1 min) at the end: {self.load_average:.1f} on {os.cpu_count()} CPUs",
        ]


def benchmark_photos(folder: Path | None, count: int) -> list[tuple[str, bytes]]:
    """``count`` photos: the first of ``folder`` (searched recursively, sorted), repeated if too few,
    else synthesized 400x533 JPEGs."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS) if folder else []
    if files:
        return [(files[i % len(files)].name, files[i % len(files)].read_bytes()) for i in range(count)]
    photos = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (400, 533), (40 * (i % 6), 90, 255 - 30 * (i % 8))).save(buffer, format="JPEG")
        photos.append((f"synthetic-{i}.jpg", buffer.getvalue()))
    return photos


def multipart_body(name: str, data: bytes) -> bytes:
    """One photo as a ``multipart/form-data`` body (boundary :data:`BOUNDARY`)."""
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{FILE_FIELD}"; filename="{name}"\r\n\r\n'
    return head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def _client(port: int, bodies: list[bytes]) -> list[int]:
    """Post ``bodies`` one after the other on one kept-alive connection; their statuses."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    statuses = []
    try:
        for body in bodies:
            connection.request("POST", "/v1/predict", body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
            statuses.append(answer.status)
    finally:
        connection.close()
    return statuses


def server_round(port: int, photos: list[tuple[str, bytes]], clients: int) -> tuple[float, list[int]]:
    """Photos per second through the server with ``clients`` concurrent clients, and the statuses."""
    bodies = [multipart_body(name, data) for name, data in photos]
    shares = [bodies[i::clients] for i in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        started = time.perf_counter()
        statuses = [s for share in pool.map(lambda b: _client(port, b), shares) for s in share]
        return len(photos) / (time.perf_counter() - started), statuses


def in_process_round(classifier, photos: list[tuple[str, bytes]]) -> float:
    """Photos per second of one ``predict_batch`` call over the photos."""
    started = time.perf_counter()
    classifier.predict_batch([data for _, data in photos])
    return len(photos) / (time.perf_counter() - started)


def _proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of process ``pid`` (default: this one), from /proc."""
    fields = _proc(pid or os.getpid(), "stat").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _get_json(port: int, path: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def start_server(model_dir: Path | None, timeout_s: float = 120) -> tuple[subprocess.Popen, int]:
    """``clothclf serve`` on a free port of 127.0.0.1, once its ``/healthz`` answers 200."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "clothclf", "serve", "--port", str(port)]
    command += ["--model", str(model_dir)] if model_dir else []
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, env={**os.environ, "CLOTHCLF_API_KEY": ""})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if _get_json(port, "/healthz")[0] == 200:
                return process, port
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("clothclf serve did not become healthy")


def run_benchmark(
    model_dir: Path | None, photos: list[tuple[str, bytes]], clients: int = 8, rounds: int = 3
) -> BenchmarkResult:
    """Alternate in-process and server rounds over ``photos`` (after one warm-up of each)."""
    classifier = load_classifier(model_dir)
    process, port = start_server(model_dir)
    try:
        in_process_round(classifier, photos[: 2 * clients])
        server_round(port, photos[: 2 * clients], clients)
        _, before = _get_json(port, "/healthz")
        local, served, statuses, cpu = [], [], Counter(), Counter()
        for _ in range(rounds):
            started = cpu_seconds()
            local.append(in_process_round(classifier, photos))
            cpu["local"] += cpu_seconds() - started
            started = cpu_seconds(process.pid)
            rate, answered = server_round(port, photos, clients)
            cpu["server"] += cpu_seconds(process.pid) - started
            served.append(rate)
            statuses.update(answered)
        _, after = _get_json(port, "/healthz")
        peak_kb = next(
            int(line.split()[1])
            for line in _proc(process.pid, "status").splitlines()
            if line.startswith("VmHWM")
        )
        return BenchmarkResult(
            photos=len(photos),
            clients=clients,
            in_process=local,
            server=served,
            statuses=dict(statuses),
            server_peak_rss_mb=peak_kb / 1024,
            tensorflow_loaded="tensorflow" in _proc(process.pid, "maps").lower(),
            batches=after["batches"] - before["batches"],
            batched_photos=after["photos"] - before["photos"],
            in_process_cpu_ms=1000 * cpu["local"] / (rounds * len(photos)),
            server_cpu_ms=1000 * cpu["server"] / (rounds * len(photos)),
            load_average=os.getloadavg()[0],
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
