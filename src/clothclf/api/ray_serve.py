"""The API on Ray Serve (``clothclf serve --engine ray``): the same FastAPI app in every replica.

Each replica is a Ray Serve deployment whose ASGI app is :func:`clothclf.api.server.create_app`, built
in the replica (``__serve_build_asgi_app__``), so endpoints, answers, limits, errors and micro-batching
are the local server's. The model folder's serving files (and its saved metrics, for ``/v1/model``)
travel once through Ray's object store, as the Ray engine of ``clothclf predict`` sends them, so the
cluster's nodes need clothclf installed but not the model. Ray Serve's proxy listens on
``host:port`` and spreads requests over the replicas. Needs ``pip install "clothclf[ray,api]"``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import tempfile
import threading
from pathlib import Path

from clothclf.api.server import ServerConfig, create_app
from clothclf.runs import training_evaluation
from clothclf.serving.ray_engine import model_files

log = logging.getLogger("clothclf.api")

#: The Ray Serve application's name (``serve status`` shows it).
APP_NAME = "clothclf"
#: CPUs each replica reserves: one batch thread, one single-threaded LiteRT interpreter.
REPLICA_CPUS = 1


def deployment_files(model_dir: str | os.PathLike | None) -> dict[str, bytes]:
    """The serving files of ``model_dir`` (default: the shipped model) and its saved validation and
    test metrics, as bytes for the replicas."""
    files = model_files(model_dir)
    if model_dir is None:
        from clothclf.config import Paths

        model_dir = Paths.from_env().default_model_dir
    for split in ("validation", "test"):
        metrics = training_evaluation(model_dir, split).metrics
        if metrics.is_file():
            files[metrics.name] = metrics.read_bytes()
    return files


def build_application(config: ServerConfig, replicas: int):
    """The Ray Serve application: ``replicas`` copies of the app of ``config`` (``serve.run`` it)."""
    from ray import serve

    @serve.deployment(
        name=APP_NAME,
        ray_actor_options={"num_cpus": REPLICA_CPUS},
        max_ongoing_requests=config.max_uploads,
    )
    @serve.ingress()
    class ClothclfReplica:
        """One replica: the model files in a temporary folder, the app built over them."""

        def __init__(self, config: ServerConfig, files: dict[str, bytes]):
            self._folder = tempfile.TemporaryDirectory(prefix="clothclf-serve-")
            for name, data in files.items():
                Path(self._folder.name, name).write_bytes(data)
            self._config = dataclasses.replace(
                config, model_dir=Path(self._folder.name), batch_threads=REPLICA_CPUS, wait_for_model=True
            )

        def __serve_build_asgi_app__(self):
            return create_app(self._config)

    return ClothclfReplica.options(num_replicas=replicas).bind(config, deployment_files(config.model_dir))


def _stop_signal() -> threading.Event:
    """An event set by SIGTERM or Ctrl-C (from now on, replacing Ray's own handler, which exits at once)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def run_on_ray(config: ServerConfig, replicas: int = 1) -> None:
    """Deploy the app on Ray Serve and keep it until SIGTERM or Ctrl-C, then delete it.

    Ray is the cluster ``RAY_ADDRESS`` names (``ray start --head`` on its head node), else a local
    instance started here and stopped at the end; a Ray already initialised in this process is used
    as it is.
    """
    import ray

    try:
        from ray import serve
    except ImportError as exc:  # ray without its [serve] extra
        raise ModuleNotFoundError(f"Ray Serve cannot be imported ({exc})", name="ray") from exc
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(logging_level="WARNING")
    stop = _stop_signal()
    try:
        serve.start(http_options={"host": config.host, "port": config.port})
        serve.run(build_application(config, replicas), name=APP_NAME, route_prefix="/")
        log.info(
            "serving on http://%s:%d with %d Ray Serve replicas (Ctrl-C stops)",
            config.host,
            config.port,
            replicas,
        )
        while not stop.wait(1.0):
            pass
        serve.delete(APP_NAME)
    finally:
        if started_here and not os.environ.get("RAY_ADDRESS"):
            serve.shutdown()
            ray.shutdown()
