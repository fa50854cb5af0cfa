"""Dataset download against a local HTTP server (the machine running the tests has no internet)."""

from __future__ import annotations

import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import CLASSES, write_dataset

from clothclf.data.datasets import create_dataset
from clothclf.data.download import download_dataset, download_with_progress_bar
from clothclf.errors import DatasetError

WRAPPER = "clothing-dataset-small-master"


@dataclass
class Route:
    body: bytes
    content_length: int | None = None  # a different value than len(body) simulates a truncated transfer


@dataclass
class Server:
    """Routes served by a local ThreadingHTTPServer, and the paths of every request it received."""

    base_url: str = ""
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def serve(self, path: str, body: bytes, content_length: int | None = None) -> str:
        self.routes[path] = Route(body, content_length)
        return self.base_url + path


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            route = state.routes.get(self.path)
            if route is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(route.content_length or len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def zip_folder(folder: Path, prefix: str = WRAPPER) -> bytes:
    """The bytes of a zip holding ``folder``'s files under ``prefix/``, like a GitHub archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{prefix}/", b"")
        archive.writestr(f"{prefix}/README.md", b"# clothing-dataset-small (synthetic)\n")
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def dataset_zip(tmp_path_factory) -> bytes:
    """A small zip laid out like the real one: a wrapper folder with train/validation/test."""
    root = write_dataset(tmp_path_factory.mktemp("zip_source"), {"train": 4, "validation": 2, "test": 2})
    return zip_folder(root)


def assert_empty(dest: Path) -> None:
    assert not dest.exists() or list(dest.iterdir()) == [], "a failed download must leave nothing"


def test_download_extracts_the_dataset(tmp_path, server, dataset_zip):
    url = server.serve("/master.zip", dataset_zip)
    root = download_dataset(tmp_path / "data", url=url)
    assert root == tmp_path / "data" / "clothing-dataset-small"
    assert sorted(p.name for p in root.iterdir()) == ["README.md", "test", "train", "validation"]
    dataset = create_dataset(root)
    assert dataset.layout == "splits"
    assert dataset.class_names == tuple(sorted(CLASSES))
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (12, 6, 6)
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["clothing-dataset-small"], "temp files left"


def test_download_defaults_to_the_data_dir_from_the_environment(tmp_path, server, dataset_zip):
    root = download_dataset(url=server.serve("/master.zip", dataset_zip))
    assert root == tmp_path / "data" / "clothing-dataset-small"  # CLOTHCLF_DATA_DIR from conftest


def test_download_is_idempotent_and_force_downloads_again(tmp_path, server, dataset_zip):
    url = server.serve("/master.zip", dataset_zip)
    first = download_dataset(tmp_path / "data", url=url)
    (first / "train" / "blue" / "marker.txt").write_text("from the first download")
    assert download_dataset(tmp_path / "data", url=url) == first
    assert server.requests == ["/master.zip"], "a valid dataset must be reused without any request"

    again = download_dataset(tmp_path / "data", url=url, force=True)
    assert server.requests == ["/master.zip", "/master.zip"]
    assert again == first and not (again / "train" / "blue" / "marker.txt").exists()
    assert len(create_dataset(again).train) == 12
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["clothing-dataset-small"]


def test_a_failed_forced_download_keeps_the_existing_dataset(tmp_path, server, dataset_zip):
    root = download_dataset(tmp_path / "data", url=server.serve("/master.zip", dataset_zip))
    with pytest.raises(DatasetError, match="HTTP 404"):
        download_dataset(tmp_path / "data", url=server.base_url + "/gone.zip", force=True)
    assert len(create_dataset(root).train) == 12
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["clothing-dataset-small"]


def test_progress_reports_increasing_bytes_and_the_total(tmp_path, server, dataset_zip, monkeypatch):
    monkeypatch.setattr("clothclf.data.download.CHUNK_BYTES", 4096)
    calls: list[tuple[int, int | None]] = []
    download_dataset(
        tmp_path / "data",
        url=server.serve("/master.zip", dataset_zip),
        progress=lambda d, t: calls.append((d, t)),
    )
    done = [d for d, _ in calls]
    assert len(calls) >= 3 and done[0] == 0
    assert all(a < b for a, b in zip(done, done[1:])), done
    assert done[-1] == len(dataset_zip)
    assert {t for _, t in calls} == {len(dataset_zip)}


def test_progress_bar_helper_draws_a_tqdm_bar(tmp_path, server, dataset_zip, capsys):
    url = server.serve("/master.zip", dataset_zip)
    root = download_with_progress_bar(tmp_path / "data", url=url)
    assert (root / "train").is_dir()
    assert "downloading clothing-dataset-small" in capsys.readouterr().err
    assert download_with_progress_bar(tmp_path / "data", url=url) == root
    assert capsys.readouterr().err == "", "no bar when the dataset is already there"


def test_http_error_leaves_nothing(tmp_path, server):
    with pytest.raises(DatasetError, match=r"could not download .*/missing\.zip: HTTP 404"):
        download_dataset(tmp_path / "data", url=server.base_url + "/missing.zip")
    assert_empty(tmp_path / "data")


def test_truncated_body_leaves_nothing(tmp_path, server, dataset_zip):
    url = server.serve("/master.zip", dataset_zip[:5000], content_length=len(dataset_zip))
    with pytest.raises(DatasetError, match=f"closed after 5,000 of {len(dataset_zip):,} bytes"):
        download_dataset(tmp_path / "data", url=url)
    assert_empty(tmp_path / "data")


def test_unreachable_server_is_a_dataset_error(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DatasetError, match="could not download"):
        download_dataset(tmp_path / "data", url=f"http://127.0.0.1:{port}/master.zip", timeout=5)
    assert_empty(tmp_path / "data")


def test_a_body_that_is_not_a_zip_leaves_nothing(tmp_path, server):
    url = server.serve("/master.zip", b"<html>rate limited</html>")
    with pytest.raises(DatasetError, match="not a usable dataset: .*not a zip file"):
        download_dataset(tmp_path / "data", url=url)
    assert_empty(tmp_path / "data")


def test_a_zip_without_class_folders_leaves_nothing(tmp_path, server):
    docs = tmp_path / "docs"
    (docs / "notes").mkdir(parents=True)
    (docs / "notes" / "a.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="no photo clothclf can read"):
        download_dataset(tmp_path / "data", url=server.serve("/master.zip", zip_folder(docs)))
    assert_empty(tmp_path / "data")


def test_a_zip_without_train_and_validation_folders_leaves_nothing(tmp_path, server):
    flat = write_dataset(tmp_path / "flat", {"": 5})
    with pytest.raises(DatasetError, match="no train/ folder"):
        download_dataset(tmp_path / "data", url=server.serve("/master.zip", zip_folder(flat)))
    assert_empty(tmp_path / "data")


def test_an_incomplete_existing_folder_is_not_overwritten_without_force(tmp_path, server, dataset_zip):
    partial = tmp_path / "data" / "clothing-dataset-small" / "train"
    partial.mkdir(parents=True)
    url = server.serve("/master.zip", dataset_zip)
    with pytest.raises(DatasetError, match="exists but is not a complete dataset"):
        download_dataset(tmp_path / "data", url=url)
    assert server.requests == [] and partial.is_dir()
    assert (download_dataset(tmp_path / "data", url=url, force=True) / "validation").is_dir()
