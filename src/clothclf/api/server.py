"""The HTTP API: a FastAPI app over a LiteRT :class:`~clothclf.serving.classifier.Classifier`.

:func:`create_app` makes the app from a frozen :class:`ServerConfig`; :func:`run_server` serves it with
uvicorn (``clothclf serve``), :mod:`clothclf.api.ray_serve` on Ray Serve. Endpoints:

- ``GET /healthz``: 200 once the model is loaded, 503 while it loads or the server shuts down;
- ``GET /v1/model``: the model's name, classes, backbone, saved accuracy and trust thresholds;
- ``POST /v1/predict`` (one multipart ``file``; query ``top_k``, ``explain``) and
  ``POST /v1/predict/batch`` (several ``file`` fields): the rows ``clothclf predict --json`` prints,
  made by the same function (:func:`clothclf.serving.rows.prediction_row`).

Photos of concurrent requests are classified together (:mod:`clothclf.api.batching`); at most
``max_uploads`` requests hold a body at a time, so memory is bounded. Every error is
``{"error": "one sentence"}`` with its status. The model loads in the background after the server
starts listening; nothing here imports TensorFlow (the server runs LiteRT models only).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hmac
import io
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from clothclf import __version__
from clothclf.api.batching import MicroBatcher
from clothclf.api.uploads import FILE_FIELD, HttpError, UploadLimits, read_uploads
from clothclf.config import MB, Limits, Paths
from clothclf.data.images import load_preview
from clothclf.errors import ClothclfError, RunError
from clothclf.runs import SUMMARY, evaluation_files, model_files, read_json, read_summary
from clothclf.serving.classifier import (
    CHUNK_SIZE,
    Classifier,
    ExplanationUnavailable,
    Prediction,
    load_classifier,
)
from clothclf.serving.explain import overlay
from clothclf.serving.rows import prediction_row
from clothclf.serving.runtime import available_cpus

log = logging.getLogger("clothclf.api")

#: The backends the server runs: LiteRT only (Keras would import TensorFlow); ``auto`` picks as
#: :func:`~clothclf.serving.classifier.load_classifier` does (the int8 model where the run serves it).
SERVER_BACKENDS = ("auto", "litert", "litert-int8")
#: Longest side of the photo an explanation is drawn over (as ``clothclf predict --explain`` draws it).
EXPLANATION_SIDE = 1024
#: Seconds in-flight requests get to finish after a shutdown signal.
GRACEFUL_SHUTDOWN_S = 30
#: Seconds a ``--workers`` process may take to answer uvicorn's health check (importing the app on a
#: busy machine takes a while; uvicorn's default, 5 s, restarted workers forever at a load average of 30).
WORKER_START_S = 60


@dataclass(frozen=True)
class ServerConfig:
    """How the server runs: the model, where it listens, its limits and its batching.

    ``max_body_mb``, ``max_files`` and ``max_pixels`` default to the app's limits
    (:class:`clothclf.config.Limits`). ``max_uploads`` requests may hold a body at once (the others wait
    their turn, not yet read). Batches of up to ``max_batch_size`` photos wait up to ``batch_wait_ms``
    for company; ``batch_threads`` run at once (default one per CPU). ``api_key`` (when set) must come
    as ``Authorization: Bearer <key>``. ``wait_for_model`` makes start-up wait for the model (Ray Serve
    marks a replica ready only then) instead of answering 503 while it loads.
    """

    model_dir: Path | None = None
    backend: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_body_mb: float = Limits.max_upload_mb
    max_files: int = Limits.max_files_per_batch
    max_pixels: int = Limits.max_pixels
    max_uploads: int = 8
    max_batch_size: int = CHUNK_SIZE
    batch_wait_ms: float = 5.0
    batch_threads: int | None = None
    upload_timeout_s: float = 60.0
    api_key: str | None = field(default=None, repr=False)
    wait_for_model: bool = False

    def __post_init__(self) -> None:
        if self.backend not in SERVER_BACKENDS:
            raise ValueError(f"the server runs {' or '.join(SERVER_BACKENDS)} models, not {self.backend!r}")
        counts = {n: getattr(self, n) for n in ("workers", "max_files", "max_uploads", "max_batch_size")}
        small = [f"{name} {value}" for name, value in counts.items() if value < 1]
        if small or self.max_body_mb <= 0 or self.upload_timeout_s <= 0 or self.batch_wait_ms < 0:
            raise ValueError(f"server limits must be positive ({', '.join(small) or 'a size or a time'})")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {self.port}")

    @property
    def upload_limits(self) -> UploadLimits:
        return UploadLimits(int(self.max_body_mb * MB), self.max_files, self.upload_timeout_s)


def load_model(config: ServerConfig) -> Classifier:
    """The classifier the server runs: ``config.model_dir`` (default: the shipped model) on LiteRT;
    a folder with only a Keras model is refused (it would import TensorFlow)."""
    folder = config.model_dir or Paths.from_env().default_model_dir
    backend, files = config.backend, model_files(folder)
    if backend == "auto" and not (files.litert or files.head_only):
        if files.int8 is None:
            raise RunError(f"{folder}: no LiteRT model (`clothclf export --model {folder}` writes one)")
        backend = "litert-int8"
    return load_classifier(folder, backend=backend, max_pixels=config.max_pixels)


def _saved_accuracy(folder: Path, split: str) -> float | None:
    files = evaluation_files(folder, split)
    return read_json(files.metrics).get("accuracy") if files else None


def model_description(classifier: Classifier, config: ServerConfig) -> dict:
    """What ``GET /v1/model`` answers: the run, its classes, saved accuracy, trust thresholds, limits."""
    folder = classifier.model_dir
    summary = read_summary(folder) if (folder / SUMMARY).is_file() else {}
    thresholds = classifier.trust.thresholds
    return {
        "name": summary.get("name", folder.name),
        "backbone": summary.get("backbone"),
        "image_size": classifier.image_size,
        "classes": list(classifier.class_names),
        "backend": classifier.backend,
        "accuracy": {split: _saved_accuracy(folder, split) for split in ("validation", "test")},
        "temperature": classifier.temperature,
        "tta": classifier.tta,
        "trust": {
            "scored": classifier.trust.scored,
            "review_below_confidence": thresholds.review,
            "unknown_at_ood_score": thresholds.unknown,
        },
        "limits": {
            "max_body_mb": config.max_body_mb,
            "max_files": config.max_files,
            "max_pixels": config.max_pixels,
        },
    }


@dataclass(frozen=True)
class Photo:
    """One uploaded photo and the number of labels its request wants."""

    data: io.BytesIO
    top_k: int


def classify_photos(classifier: Classifier, photos: Sequence[Photo]) -> list[Prediction | ClothclfError]:
    """One :meth:`~Classifier.try_predict_batch` per ``top_k`` asked for (usually one), answers in order."""
    results: list[Prediction | ClothclfError | None] = [None] * len(photos)
    for top_k in dict.fromkeys(photo.top_k for photo in photos):
        indices = [i for i, photo in enumerate(photos) if photo.top_k == top_k]
        answers = classifier.try_predict_batch([photos[i].data for i in indices], top_k)
        for i, answer in zip(indices, answers, strict=True):
            results[i] = answer
    return results


def explained_row(classifier: Classifier, photo: io.BytesIO, top_k: int, max_pixels: int) -> dict:
    """The row of one photo with its explanation: the heatmap over the photo as a base64 PNG."""
    prediction, explanation = classifier.predict_explained(photo, top_k)
    photo.seek(0)
    picture = Image.fromarray(load_preview(photo, EXPLANATION_SIDE, max_pixels))
    png = io.BytesIO()
    overlay(picture, explanation).save(png, format="PNG")
    drawn = {
        "label": explanation.label,
        "method": explanation.method,
        "png_base64": base64.b64encode(png.getvalue()).decode("ascii"),
    }
    return {**prediction_row(photo.name, prediction), "explanation": drawn}


class Service:
    """The state of one running app: its classifier (once loaded), batcher, upload slots and counters."""

    def __init__(self, config: ServerConfig, load: Callable[[ServerConfig], Classifier]):
        self.config, self._load = config, load
        self.classifier: Classifier | None = None
        self.model: dict | None = None
        self.load_error: str | None = None
        self.draining = False
        self.batcher: MicroBatcher[Photo, Prediction | ClothclfError] = MicroBatcher(
            lambda photos: classify_photos(self.classifier, photos),
            max_size=config.max_batch_size,
            wait_s=config.batch_wait_ms / 1000,
            concurrency=config.batch_threads or available_cpus(),
            expect_company=lambda: self.holding > 1,
        )
        self._uploads: asyncio.Semaphore | None = None
        self._loading: asyncio.Task | None = None
        self.holding = 0

    async def start(self) -> None:
        """Start batching and loading the model (waited for with ``wait_for_model``)."""
        self._uploads = asyncio.Semaphore(self.config.max_uploads)
        await self.batcher.start()
        self._loading = asyncio.create_task(self._load_model())
        if self.config.wait_for_model:
            await self._loading
            if self.load_error:
                raise RuntimeError(self.load_error)

    async def _load_model(self) -> None:
        started = time.perf_counter()
        try:
            classifier = await asyncio.to_thread(self._load, self.config)
            self.model = model_description(classifier, self.config)
        except Exception as exc:  # a broken model folder: said on every request, and logged once
            self.load_error = f"the model could not be loaded: {exc}"
            log.error(self.load_error)
            return
        self.classifier = classifier
        log.info(
            "model %s loaded in %.1f s (%s, %d classes)",
            self.model["name"], time.perf_counter() - started, classifier.backend, len(classifier.class_names),
        )  # fmt: skip

    def ready(self) -> Classifier:
        """The classifier; 503 while it loads, if it failed to load, or once shutdown has begun."""
        if self.draining:
            raise HttpError(503, "the server is shutting down; try another one or again shortly")
        if self.load_error:
            raise HttpError(503, self.load_error)
        if self.classifier is None:
            raise HttpError(
                503, "the model is still loading; try again in a few seconds", {"Retry-After": "2"}
            )
        return self.classifier

    @asynccontextmanager
    async def upload_slot(self) -> AsyncIterator[Classifier]:
        """Wait for one of the ``max_uploads`` slots a request holds while its photos are in memory.
        (Batches wait for company only while more than one request holds a slot.)"""
        self.ready()
        async with self._uploads:
            classifier = self.ready()  # shutdown may have begun while this request waited
            self.holding += 1
            try:
                yield classifier
            finally:
                self.holding -= 1

    async def classify(self, photos: Sequence[io.BytesIO], top_k: int) -> list[Prediction | ClothclfError]:
        """Each photo's prediction or error, in batches with other requests' photos."""
        return list(await asyncio.gather(*(self.batcher.put(Photo(photo, top_k)) for photo in photos)))

    async def stop(self) -> None:
        self.draining = True
        if self._loading is not None and not self._loading.done():
            await asyncio.gather(self._loading, return_exceptions=True)
        await self.batcher.close()


def create_app(config: ServerConfig, load: Callable[[ServerConfig], Classifier] = load_model) -> FastAPI:
    """The FastAPI app of ``config``; ``load`` makes its classifier (in a thread, once the app starts)."""
    service = Service(config, load)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="clothclf",
        version=__version__,
        description="Clothing-photo classifier. Answers are the rows `clothclf predict --json` prints.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(AccessLog)
    _add_error_handlers(app)
    authorized = _authorization(config.api_key)
    _add_status_routes(app, service, authorized)
    _add_predict_routes(app, service, authorized)
    return app


def _authorization(api_key: str | None) -> Callable:
    """The dependency that checks the Bearer token against ``api_key`` (constant time); none without a key."""
    bearer = HTTPBearer(auto_error=False, description="the server's CLOTHCLF_API_KEY, when it has one")

    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if api_key is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise HttpError(
                401,
                "a valid API key is needed: send Authorization: Bearer <key>",
                {"WWW-Authenticate": "Bearer"},
            )

    return authorized


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"error": message}`` with ``status``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": "one sentence"}``: ours, FastAPI's validation, routing and the unexpected."""

    async def refused(request: Request, exc: HttpError) -> JSONResponse:
        return error_response(exc.status, str(exc), exc.headers)

    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = " ".join(str(part) for part in first.get("loc", ()))
        return error_response(422, f"{where}: {first.get('msg', 'invalid value')}")

    async def routing(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        what = f"{request.method} {request.url.path}"
        messages = {404: f"no such endpoint: {what} (see /docs)", 405: f"method not allowed: {what}"}
        return error_response(exc.status_code, messages.get(exc.status_code, str(exc.detail)), exc.headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); the server's log has the details")

    app.add_exception_handler(HttpError, refused)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, routing)
    app.add_exception_handler(Exception, unexpected)


def _errors(*codes: int) -> dict:
    """OpenAPI descriptions of error answers."""
    return {code: {"description": '{"error": "one sentence"}'} for code in codes}


def _add_status_routes(app: FastAPI, service: Service, authorized: Callable) -> None:
    """``GET /healthz`` (no key needed: load balancers call it) and ``GET /v1/model``."""

    @app.get(
        "/healthz",
        summary="200 when the server answers; 503 while it loads or shuts down",
        responses=_errors(503),
    )
    async def healthz() -> JSONResponse:
        service.ready()
        stats = service.batcher.stats
        return JSONResponse(
            {
                "status": "ok",
                "model": service.model["name"],
                "pid": os.getpid(),
                "batches": stats.batches,
                "photos": stats.items,
                "largest_batch": stats.largest,
            }
        )

    @app.get(
        "/v1/model",
        summary="The model: name, classes, backbone, saved accuracy, trust thresholds, limits",
        dependencies=[Depends(authorized)],
        responses=_errors(401, 503),
    )
    async def model() -> JSONResponse:
        service.ready()
        return JSONResponse(service.model)


def _multipart_body(several: bool) -> dict:
    """The OpenAPI request body of the predict endpoints (they read it themselves, streamed)."""
    photo = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": photo} if several else photo
    form = {"type": "object", "properties": {FILE_FIELD: schema}, "required": [FILE_FIELD]}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}}}


TOP_K = Query(3, ge=1, description="labels per photo, most likely first")
PREDICT_ERRORS = _errors(400, 401, 408, 413, 415, 422, 503)


def _add_predict_routes(app: FastAPI, service: Service, authorized: Callable) -> None:
    """``POST /v1/predict`` and ``POST /v1/predict/batch``."""
    limits = service.config.upload_limits

    @app.post(
        "/v1/predict",
        summary="Classify one photo (multipart field `file`); its row as `clothclf predict --json` prints it",
        dependencies=[Depends(authorized)],
        openapi_extra=_multipart_body(several=False),
        responses=PREDICT_ERRORS,
    )
    async def predict(
        request: Request,
        top_k: int = TOP_K,
        explain: bool = Query(
            False, description="add the heatmap of where the model looked, as a base64 PNG"
        ),
    ) -> JSONResponse:
        async with service.upload_slot() as classifier:
            photos = await read_uploads(request, limits)
            if len(photos) > 1:
                raise HttpError(422, f"one photo per request here; send {len(photos)} to /v1/predict/batch")
            if explain:
                row = await _explained(classifier, photos[0], top_k, service.config.max_pixels)
                return JSONResponse(row)
            (result,) = await service.classify(photos, top_k)
        if isinstance(result, ClothclfError):
            raise HttpError(400, str(result))
        return JSONResponse(prediction_row(photos[0].name, result))

    @app.post(
        "/v1/predict/batch",
        summary="Classify several photos (`file` fields); one row each, in order (a bad photo gets an error row)",
        dependencies=[Depends(authorized)],
        openapi_extra=_multipart_body(several=True),
        responses=PREDICT_ERRORS,
    )
    async def predict_batch(request: Request, top_k: int = TOP_K) -> JSONResponse:
        async with service.upload_slot():
            photos = await read_uploads(request, limits)
            results = await service.classify(photos, top_k)
        return JSONResponse([prediction_row(p.name, r) for p, r in zip(photos, results, strict=True)])


async def _explained(classifier: Classifier, photo: io.BytesIO, top_k: int, max_pixels: int) -> dict:
    """:func:`explained_row` in a thread; 400 for a photo that cannot be read, 422 for a model that
    cannot explain."""
    try:
        return await asyncio.to_thread(explained_row, classifier, photo, top_k, max_pixels)
    except ExplanationUnavailable as exc:
        raise HttpError(422, str(exc)) from None
    except ClothclfError as exc:
        raise HttpError(400, str(exc)) from None


class AccessLog:
    """ASGI middleware: one log line per request (client, method, path, status, bytes received, time)."""

    def __init__(self, app: Callable):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status, received = time.perf_counter(), 500, 0

        async def counting_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def status_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, counting_receive, status_send)
        finally:
            client = "{}:{}".format(*scope["client"]) if scope.get("client") else "-"
            query = f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else ""
            log.info(
                '%s "%s %s%s" %d %d B in %.1f ms',
                client, scope["method"], scope["path"], query, status, received, 1000 * (time.perf_counter() - started),
            )  # fmt: skip


class AppFactory:
    """Makes the app in the process that serves it (each uvicorn worker its own) and keeps it, so a
    shutdown signal can turn new work away with 503 while the requests in flight finish."""

    def __init__(self, config: ServerConfig, load: Callable[[ServerConfig], Classifier] = load_model):
        self.config, self.load = config, load
        self.app: FastAPI | None = None

    def __call__(self) -> FastAPI:
        self.app = create_app(self.config, self.load)
        return self.app

    def begin_draining(self) -> None:
        if self.app is not None:
            self.app.state.service.draining = True


class DrainingServer(uvicorn.Server):
    """uvicorn's server, marking the app as shutting down on the first SIGTERM or Ctrl-C."""

    def handle_exit(self, sig: int, frame: object) -> None:
        if isinstance(self.config.app, AppFactory):
            self.config.app.begin_draining()
        super().handle_exit(sig, frame)


def log_config() -> dict:
    """uvicorn's logging, plus clothclf's lines (the access log among them) with their time, on stderr."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["formatters"]["clothclf"] = {"format": "%(asctime)s clothclf: %(message)s"}
    config["handlers"]["clothclf"] = {
        "class": "logging.StreamHandler",
        "formatter": "clothclf",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["clothclf"] = {"handlers": ["clothclf"], "level": "INFO", "propagate": False}
    return config


def run_server(config: ServerConfig, load: Callable[[ServerConfig], Classifier] = load_model) -> None:
    """Serve the app of ``config`` with uvicorn until SIGTERM or Ctrl-C (requests in flight finish;
    ``config.workers`` processes share the port, each with its own model)."""
    settings = uvicorn.Config(
        AppFactory(config, load),
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        access_log=False,
        log_config=log_config(),
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        timeout_worker_healthcheck=WORKER_START_S,
    )
    if config.workers > 1:  # uvicorn's own worker processes (stock servers: 503 only once they shut down)
        from uvicorn.supervisors import Multiprocess

        Multiprocess(settings, sockets=[settings.bind_socket()]).run()
    else:
        DrainingServer(settings).run()
