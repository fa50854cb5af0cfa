"""The HTTP API over real HTTP on 127.0.0.1: endpoints, status codes, hostile inputs, batching, load,
the CLI's server (API key, no TensorFlow, graceful shutdown) and Ray Serve.

The server runs the shipped model (``models/default``) in a subprocess on a free port; its classes and
name are read from the model folder, never spelled here. Every hostile request must get a JSON error
and leave the server answering the next request.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers import PROJECT_ROOT, make_image
from PIL import Image
from test_reliability_inputs import bad_files, odd_files

from clothclf.runs import read_class_names, read_summary
from clothclf.serving.classifier import load_classifier
from clothclf.serving.rows import classify_files

MODEL = PROJECT_ROOT / "models" / "default"
MB = 1024 * 1024
#: Seconds the test server gives an upload (short, so the slow-client test is quick; long enough for
#: 20 MB to arrive on a busy machine).
UPLOAD_TIMEOUT_S = 10
SERVER_SCRIPT = """
import sys
from pathlib import Path
from clothclf.api.server import ServerConfig, run_server
run_server(ServerConfig(model_dir=Path(sys.argv[1]), port=int(sys.argv[2]), upload_timeout_s=float(sys.argv[3])))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mb(self) -> tuple[float, float]:
        """Resident and peak resident memory (MB) of the server process, from /proc."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def healthy(self) -> dict:
        """The health answer, asserting the server still answers 200."""
        answer = requests.get(f"{self.url}/healthz", timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()


def start_server(command: list[str], port: int, env: dict | None = None, timeout: float = 180) -> Server:
    """Start a server process and wait until ``/healthz`` answers 200."""
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})}
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    server, deadline = Server(process, port), time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{server.url}/healthz", timeout=5).status_code == 200:
                return server
        except requests.RequestException:  # not listening yet, or too busy starting to answer
            pass
        time.sleep(0.3)
    pytest.fail(f"the server did not become healthy: {stop(server)[-3000:]}")


def stop(server: Server) -> str:
    """SIGTERM the server, wait for it and return its standard error."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        _, stderr = server.process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        server.process.kill()
        _, stderr = server.process.communicate()
    return stderr


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    port = free_port()
    command = [sys.executable, "-c", SERVER_SCRIPT, str(MODEL), str(port), str(UPLOAD_TIMEOUT_S)]
    running = start_server(command, port)
    yield running
    stop(running)


def jpeg(class_index: int = 0, seed: int = 0, size: int = 64) -> bytes:
    buffer = io.BytesIO()
    make_image(class_index, np.random.default_rng(seed), size).save(buffer, format="JPEG")
    return buffer.getvalue()


def post(server: Server, path: str, files: list[tuple[str, bytes]], **params) -> requests.Response:
    return requests.post(
        f"{server.url}{path}", files=[("file", (n, d)) for n, d in files], params=params, timeout=60
    )


def assert_error(answer: requests.Response | http.client.HTTPResponse, status: int, says: str = "") -> None:
    """A JSON ``{"error": "..."}`` answer with ``status`` whose sentence contains ``says``."""
    code = getattr(answer, "status_code", None) or answer.status
    body = answer.json() if hasattr(answer, "json") else json.loads(answer.read())
    assert code == status, body
    assert list(body) == ["error"] and says in body["error"], body


# --- endpoints -----------------------------------------------------------------------------------


def test_health_model_and_docs(server):
    health = server.healthy()
    assert health["status"] == "ok" and health["model"] == read_summary(MODEL)["name"]
    model = requests.get(f"{server.url}/v1/model", timeout=10).json()
    assert model["classes"] == read_class_names(MODEL) and model["name"] == read_summary(MODEL)["name"]
    assert model["backend"] == load_classifier(MODEL).backend and 0 < model["accuracy"]["validation"] <= 1
    assert set(model["trust"]) == {"scored", "review_below_confidence", "unknown_at_ood_score"}
    docs = requests.get(f"{server.url}/docs", timeout=10)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = requests.get(f"{server.url}/openapi.json", timeout=10).json()["paths"]
    assert {"/healthz", "/v1/model", "/v1/predict", "/v1/predict/batch"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/predict"]["post"]["requestBody"]["content"]


def local_rows(tmp_path: Path, photos: dict[str, bytes], top_k: int) -> list[dict]:
    """The rows ``clothclf predict --json`` prints for these photos (its own function, in this process)."""
    paths = []
    for name, data in photos.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    rows = list(classify_files(load_classifier(MODEL), paths, top_k))
    return [{**row, "file": Path(row["file"]).name} for row in rows]


def assert_same_rows(got: list[dict], want: list[dict]) -> None:
    """The same keys and answers (floats to LiteRT's batch-to-batch rounding)."""
    for a, b in zip(got, want, strict=True):
        assert list(a) == list(b), (a, b)
        for key, value in b.items():
            if key == "error":
                assert a[key].endswith(value.split(": ", 1)[1])  # the CLI names the path, the API the file
            elif isinstance(value, float):
                assert a[key] == pytest.approx(value, abs=1e-4), key
            elif key == "top_k":
                assert [t["label"] for t in a[key]] == [t["label"] for t in value]
            else:
                assert a[key] == value, key


def test_predict_answers_the_rows_of_the_cli(server, tmp_path):
    photos = {f"photo{i}.jpg": jpeg(i % 3, seed=i) for i in range(3)}
    want = local_rows(tmp_path, photos, top_k=2)
    got = [post(server, "/v1/predict", [(n, d)], top_k=2).json() for n, d in photos.items()]
    assert_same_rows(got, want)
    assert all(len(row["top_k"]) == 2 for row in got)


def test_batch_answers_one_row_per_photo_in_order_and_an_error_row_for_a_bad_one(server, tmp_path):
    photos = {"a.jpg": jpeg(0, 1), "notes.jpg": b"shopping list: socks\n", "b.jpg": jpeg(2, 2)}
    answer = post(server, "/v1/predict/batch", list(photos.items()))
    assert answer.status_code == 200
    assert_same_rows(answer.json(), local_rows(tmp_path, photos, top_k=3))
    assert "not an image format" in answer.json()[1]["error"]


def test_explanation_is_a_png_over_the_photo(server):
    answer = post(server, "/v1/predict", [("a.jpg", jpeg(1, 3, size=96))], explain="true")
    row = answer.json()
    assert answer.status_code == 200 and row["explanation"]["label"] == row["top_k"][0]["label"]
    picture = Image.open(io.BytesIO(base64.b64decode(row["explanation"]["png_base64"])))
    assert picture.format == "PNG" and picture.size == (96, 96)


# --- status codes and hostile inputs ----------------------------------------------------------


def raw_request(server: Server, head: str, body: bytes = b"", pause_s: float = 0.0, rest: bytes = b""):
    """Send ``head`` and ``body`` on a plain socket, wait ``pause_s``, send ``rest``; the parsed answer."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(head.encode("latin-1") + b"\r\n" + body)
    time.sleep(pause_s)
    if rest:
        sock.sendall(rest)
    answer = http.client.HTTPResponse(sock)
    answer.begin()
    return answer


def wait_for_continue(sock: socket.socket) -> None:
    """Read the server's ``100 Continue``: it has begun reading this request's body (uvicorn sends it
    when the endpoint first asks for the body)."""
    received = b""
    while not received.endswith(b"\r\n\r\n"):
        received += sock.recv(1)
    assert received.startswith(b"HTTP/1.1 100"), received


def multipart(files: list[tuple[str, bytes]], boundary: str = "clothclf-test", field: str = "file") -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def head(path: str, length: int | None, boundary: str = "clothclf-test") -> str:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Type: multipart/form-data; boundary={boundary}",
    ]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return "\r\n".join(lines) + "\r\n"


def test_wrong_requests_get_their_status_and_a_json_error(server):
    photo = [("a.jpg", jpeg())]
    assert_error(post(server, "/v1/predict", [("notes.txt", b"not a photo")]), 400, "notes.txt: not an image")
    as_json = requests.post(f"{server.url}/v1/predict", json={"file": "a.jpg"}, timeout=10)
    assert_error(as_json, 415, "multipart/form-data")
    raw = requests.post(f"{server.url}/v1/predict", data=jpeg(), headers={"Content-Type": "image/jpeg"})
    assert_error(raw, 415, "image/jpeg")
    wrong_field = requests.post(f"{server.url}/v1/predict", files=[("photo", ("a.jpg", jpeg()))], timeout=10)
    assert_error(wrong_field, 422, "'photo'")
    assert_error(post(server, "/v1/predict", photo, top_k=0), 422, "top_k")
    assert_error(post(server, "/v1/predict", photo, top_k="many"), 422, "top_k")
    assert_error(post(server, "/v1/predict", photo * 2), 422, "/v1/predict/batch")
    empty = b"--clothclf-test--\r\n"
    assert_error(raw_request(server, head("/v1/predict", len(empty)), empty), 422, "no photo")
    assert_error(requests.get(f"{server.url}/v1/nothing", timeout=10), 404, "no such endpoint")
    assert_error(requests.get(f"{server.url}/v1/predict", timeout=10), 405, "not allowed")
    too_many = post(server, "/v1/predict/batch", [("a.jpg", b"x")] * 51)
    assert_error(too_many, 413, "50 photos")
    server.healthy()


def test_the_decoder_corpus_gets_the_decoders_messages(server):
    """The files the reliability tests feed every door: each its message, as a 400 alone or a row in a
    batch; valid images in odd forms are classified."""
    bad = bad_files()
    for name, (data, says) in bad.items():
        assert_error(post(server, "/v1/predict", [(name, data)]), 400, says)
    rows = post(server, "/v1/predict/batch", [(n, d) for n, (d, _) in bad.items()]).json()
    assert all(says in row["error"] for row, (_, says) in zip(rows, bad.values(), strict=True)), rows
    odd = post(server, "/v1/predict/batch", [(n, d) for n, (d, _) in odd_files().items()]).json()
    assert all("label" in row for row in odd), odd
    server.healthy()


def test_a_60_mb_body_is_refused_before_it_is_read(server):
    _, peak_before = server.rss_mb()
    # Announced: refused on its Content-Length alone, before the client sends any of it.
    started = time.monotonic()
    assert_error(raw_request(server, head("/v1/predict", 60 * MB)), 413, "20 MB")
    assert time.monotonic() - started < 20  # the client sent no byte of the body: nothing to wait for
    # Not announced (chunked): counted while it streams, refused at the limit.
    chunk = b"\xff" * MB

    def sixty_mb() -> Iterator[bytes]:
        yield b'--clothclf-test\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'
        for _ in range(60):
            yield chunk

    chunked = requests.post(
        f"{server.url}/v1/predict",
        data=sixty_mb(),
        headers={"Content-Type": "multipart/form-data; boundary=clothclf-test"},
        timeout=60,
    )
    assert_error(chunked, 413, "20 MB")
    _, peak_after = server.rss_mb()
    assert peak_after - peak_before < 60, "at most the limit's worth of the body was held"
    server.healthy()


def test_truncated_and_slow_uploads_get_a_json_error(server):
    whole = multipart([("a.jpg", jpeg())])
    # The body ends (as its length says) before the closing boundary.
    cut = whole[: len(whole) // 2]
    assert_error(raw_request(server, head("/v1/predict", len(cut)), cut), 400, "closing boundary")
    # The client goes away mid-upload: nobody to answer, and the server carries on.
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(head("/v1/predict", len(whole)).encode() + b"\r\n" + cut)
    sock.close()
    # A client that stops sending gets 408 once the upload's time is up.
    started = time.monotonic()
    slow = raw_request(server, head("/v1/predict", len(whole)), cut, pause_s=UPLOAD_TIMEOUT_S + 1)
    assert_error(slow, 408, f"{UPLOAD_TIMEOUT_S} s")
    assert time.monotonic() - started < UPLOAD_TIMEOUT_S + 30
    # A slow client that does finish in time is answered.
    late = raw_request(server, head("/v1/predict", len(whole)), cut, pause_s=0.3, rest=whole[len(cut) :])
    assert late.status == 200 and "label" in json.loads(late.read())
    server.healthy()


# --- batching and load ------------------------------------------------------------------------


def concurrent_predictions(server: Server, clients: int, per_client: int) -> list[requests.Response]:
    photos = [jpeg(i % 3, seed=i, size=160) for i in range(clients * per_client)]

    def client(index: int) -> list[requests.Response]:
        with requests.Session() as session:
            return [
                session.post(
                    f"{server.url}/v1/predict", files={"file": (f"{index}-{j}.jpg", photo)}, timeout=60
                )
                for j, photo in enumerate(photos[index * per_client : (index + 1) * per_client])
            ]

    with ThreadPoolExecutor(clients) as pool:
        return [answer for answers in pool.map(client, range(clients)) for answer in answers]


def test_load_8_clients_on_loopback_all_answered_and_batched(server):
    before, started = server.healthy(), time.monotonic()
    answers = concurrent_predictions(server, clients=8, per_client=10)
    assert time.monotonic() - started < 300
    assert [a.status_code for a in answers] == [200] * 80
    assert all("label" in a.json() for a in answers)
    after = server.healthy()
    photos, batches = after["photos"] - before["photos"], after["batches"] - before["batches"]
    assert photos == 80
    assert batches <= 60 and after["largest_batch"] > 1, f"{photos} photos in {batches} forward passes"
    assert server.rss_mb()[1] < 350


# --- the CLI's server: API key, no TensorFlow, graceful shutdown --------------------------------


def test_cli_server_checks_the_key_loads_no_tensorflow_and_finishes_in_flight_requests_on_sigterm():
    port = free_port()
    command = [sys.executable, "-m", "clothclf", "serve", "--model", str(MODEL), "--port", str(port)]
    server = start_server(command, port, env={"CLOTHCLF_API_KEY": "s3cret"})
    try:
        model = f"{server.url}/v1/model"
        assert_error(requests.get(model, timeout=10), 401, "API key")
        wrong = requests.get(model, headers={"Authorization": "Bearer s3cre"}, timeout=10)
        assert_error(wrong, 401, "API key")
        assert wrong.headers["WWW-Authenticate"] == "Bearer"
        assert requests.get(model, headers={"Authorization": "Bearer s3cret"}, timeout=10).status_code == 200
        libraries = Path(f"/proc/{server.process.pid}/maps").read_text()
        assert "tensorflow" not in libraries.lower() and "litert" in libraries.lower()
        # A request in flight when SIGTERM comes still gets its answer.
        whole = multipart([("a.jpg", jpeg())])
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        request = head("/v1/predict", len(whole)) + "Authorization: Bearer s3cret\r\nExpect: 100-continue\r\n"
        sock.sendall(request.encode() + b"\r\n")
        wait_for_continue(sock)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(whole)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert answer.status == 200 and "label" in json.loads(answer.read())
        stderr = stop(server)
    finally:
        stop(server)
    assert server.process.returncode in (0, -signal.SIGTERM)
    assert '"POST /v1/predict" 200' in stderr and '"GET /v1/model" 401' in stderr


def worker_processes(pid: int) -> set[int]:
    """The worker processes a server process spawned (multiprocessing's, not its resource tracker)."""
    workers = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid and b"spawn_main" in command:
            workers.add(int(stat.parent.name))
    return workers


@pytest.mark.slow
def test_cli_server_with_two_worker_processes():
    port = free_port()
    command = [sys.executable, "-m", "clothclf", "serve", "--model", str(MODEL), "--port", str(port)]
    server = start_server([*command, "--workers", "2"], port)
    try:
        workers = worker_processes(server.process.pid)
        assert len(workers) == 2
        assert {server.healthy()["pid"] for _ in range(10)} <= workers
        assert post(server, "/v1/predict", [("a.jpg", jpeg())]).status_code == 200
    finally:
        stop(server)
    assert server.process.returncode in (0, -signal.SIGTERM)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


# --- loading and shutting down: 503 -------------------------------------------------------------


def test_503_while_the_model_loads_and_once_shutdown_has_begun():
    import uvicorn

    from clothclf.api.server import AppFactory, DrainingServer, ServerConfig, load_model

    loaded = threading.Event()

    def slow_load(config: ServerConfig):
        loaded.wait(30)
        return load_model(config)

    port = free_port()
    config = ServerConfig(model_dir=MODEL, port=port, max_uploads=1)
    uv = DrainingServer(
        uvicorn.Config(AppFactory(config, slow_load), factory=True, port=port, log_level="warning")
    )
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    server = Server(None, port)
    try:
        deadline = time.monotonic() + 30
        while not uv.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert_error(requests.get(f"{server.url}/healthz", timeout=10), 503, "loading")
        assert_error(post(server, "/v1/predict", [("a.jpg", jpeg())]), 503, "loading")
        loaded.set()
        while requests.get(f"{server.url}/healthz", timeout=10).status_code != 200:
            time.sleep(0.1)
        # One upload in flight holds the only slot; a second request waits for it; then shutdown begins.
        whole = multipart([("a.jpg", jpeg())])
        first = socket.create_connection(("127.0.0.1", port), timeout=60)
        first.sendall(head("/v1/predict", len(whole)).encode() + b"Expect: 100-continue\r\n\r\n")
        wait_for_continue(first)
        second = socket.create_connection(("127.0.0.1", port), timeout=30)
        second.sendall(head("/v1/predict", len(whole)).encode() + b"\r\n" + whole)
        time.sleep(1.0)  # it waits for the slot the first one holds
        uv.handle_exit(signal.SIGTERM, None)
        first.sendall(whole)
        answers = [http.client.HTTPResponse(sock) for sock in (first, second)]
        for answer in answers:
            answer.begin()
        assert answers[0].status == 200 and "label" in json.loads(answers[0].read())
        assert_error(answers[1], 503, "shutting down")
    finally:
        loaded.set()
        uv.should_exit = True
        thread.join(30)
    assert not thread.is_alive()


def test_the_server_process_never_imports_tensorflow():
    """A fresh process serves a prediction, a batch and an explanation; tensorflow is not in sys.modules."""
    script = """
import sys, threading, time, io
import requests, uvicorn
from pathlib import Path
from PIL import Image
from clothclf.api.server import ServerConfig, create_app
import clothclf.api.ray_serve, clothclf.cli
port = int(sys.argv[2])
server = uvicorn.Server(uvicorn.Config(create_app(ServerConfig(model_dir=Path(sys.argv[1]), port=port)), port=port, access_log=False))
threading.Thread(target=server.run, daemon=True).start()
url = f"http://127.0.0.1:{port}"
while True:
    try:
        if requests.get(url + "/healthz").status_code == 200:
            break
    except requests.ConnectionError:
        pass
    time.sleep(0.1)
photo = io.BytesIO(); Image.new("RGB", (64, 64), (200, 30, 40)).save(photo, format="JPEG")
files = [("file", ("a.jpg", photo.getvalue()))]
codes = [requests.post(url + path, files=files).status_code for path in ("/v1/predict", "/v1/predict?explain=true", "/v1/predict/batch")]
server.should_exit = True
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print(codes, heavy)
"""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(MODEL), str(free_port())],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[200, 200, 200] []"


# --- Ray Serve ----------------------------------------------------------------------------------

RAY_SCRIPT = """
import sys
try:
    import ray
    from ray import serve  # noqa: F401
except ImportError as exc:
    print(f"ray serve cannot start here: {exc}")
    sys.exit(3)
ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
from clothclf.cli import main
code = main(["serve", "--engine", "ray", "--replicas", "2", "--model", sys.argv[1], "--port", sys.argv[2]])
ray.shutdown()
sys.exit(code)
"""


@pytest.mark.slow
def test_ray_serve_two_replicas_answer_as_the_local_server(tmp_path):
    port = free_port()
    command = [sys.executable, "-c", RAY_SCRIPT, str(MODEL), str(port)]
    env = {"RAY_ADDRESS": "", "RAY_AUTH_MODE": "disabled"}
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **env}
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    server, deadline = Server(process, port), time.monotonic() + 150
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if requests.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        if process.poll() == 3:
            pytest.skip(process.stdout.read().strip())
        server.healthy()
        photos = {f"p{i}.jpg": jpeg(i % 3, seed=i) for i in range(4)}
        answer = post(server, "/v1/predict/batch", list(photos.items()))
        assert_same_rows(answer.json(), local_rows(tmp_path, photos, top_k=3))
        assert_error(post(server, "/v1/predict", [("notes.txt", b"no photo")]), 400, "not an image")
        pids: set[int] = set()
        with ThreadPoolExecutor(8) as pool:  # while replicas are busy, health checks go to both
            busy = pool.submit(concurrent_predictions, server, 6, 4)
            while not busy.done() and len(pids) < 2:
                pids.add(server.healthy()["pid"])
            assert [a.status_code for a in busy.result()] == [200] * 24
        assert len(pids) == 2
    finally:
        stderr = stop(server)
    assert process.returncode == 0, stderr[-3000:]


def test_benchmark_script_reports_the_figures(tmp_path):
    script = PROJECT_ROOT / "scripts" / "benchmark_api.py"
    args = ["--images", str(tmp_path / "none"), "--photos", "4", "--rounds", "1", "--clients", "2", "--json"]
    done = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["statuses"] == {"200": 4} and result["tensorflow_loaded"] is False
    assert result["ratio"] > 0 and 0 < result["server_peak_rss_mb"] < 1000 and result["batched_photos"] == 4


# --- the parts alone ----------------------------------------------------------------------------


def test_micro_batcher_gathers_concurrent_items_and_passes_failures_to_every_waiter():
    import asyncio

    from clothclf.api.batching import MicroBatcher

    calls: list[list[int]] = []

    def double(items):
        calls.append(list(items))
        if -1 in items:
            raise RuntimeError("a broken batch")
        time.sleep(0.05)
        return [2 * item for item in items]

    async def scenario():
        batcher = MicroBatcher(double, max_size=4, wait_s=0.05, concurrency=1)
        await batcher.start()
        answers = await asyncio.gather(*(batcher.put(i) for i in range(10)))
        failed = await asyncio.gather(batcher.put(-1), batcher.put(7), return_exceptions=True)
        await batcher.close()
        return answers, failed, batcher.stats

    answers, failed, stats = asyncio.run(scenario())
    assert answers == [2 * i for i in range(10)]
    assert [len(c) for c in calls[:3]] == [4, 4, 2] and stats.largest == 4 and stats.items == 12
    assert all(isinstance(f, RuntimeError) for f in failed)


def test_server_config_refuses_keras_and_limits_below_one():
    from clothclf.api.server import ServerConfig

    with pytest.raises(ValueError, match="litert"):
        ServerConfig(backend="keras")
    with pytest.raises(ValueError, match="max_uploads 0"):
        ServerConfig(max_uploads=0)
    with pytest.raises(ValueError, match="port"):
        ServerConfig(port=70000)
    assert "s3cret" not in repr(ServerConfig(api_key="s3cret"))


def test_serve_without_the_api_extra_names_it():
    script = (
        "import sys; sys.modules['fastapi'] = None; from clothclf.cli import main; sys.exit(main(['serve']))"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == "clothclf: error: serve needs fastapi: pip install 'clothclf[api]'"
