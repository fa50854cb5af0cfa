"""Reading photos out of a ``multipart/form-data`` request: streamed, counted, in memory only.

:func:`read_uploads` refuses a body whose ``Content-Length`` is over the limit before reading any of
it, counts the bytes while they stream in (a chunked body cannot announce its size) and stops at the
limit, gives the whole upload a deadline (a client that sends slowly does not hold a slot for ever)
and parses the parts as they come with ``python-multipart``'s streaming parser. Each photo is kept in
an ``io.BytesIO`` named after its file name, so the decoder reads it in place and names it in its
messages; nothing is written to disk.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from clothclf.config import MB
from clothclf.errors import ClothclfError

#: The form field that carries a photo.
FILE_FIELD = "file"


class HttpError(ClothclfError):
    """A request the API refuses: its HTTP status and one sentence for ``{"error": ...}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


@dataclass(frozen=True)
class UploadLimits:
    """How much one request may send: bytes in its body, photos, and seconds to send them."""

    max_bytes: int
    max_files: int
    timeout_s: float

    def too_large(self) -> HttpError:
        return HttpError(413, f"the request body is over the limit of {self.max_bytes / MB:g} MB")


def multipart_boundary(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` content type; 415 for any other kind of body."""
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        shown = kind.decode("latin-1") or "no content type"
        raise HttpError(415, f"send photos as multipart/form-data in fields named {FILE_FIELD}, not {shown}")
    if not options.get(b"boundary"):
        raise HttpError(400, "the multipart/form-data content type has no boundary")
    return options[b"boundary"]


class _Parts:
    """Callbacks of the streaming parser that collect the ``file`` parts as named in-memory files."""

    def __init__(self, boundary: bytes, max_files: int):
        self.files: list[io.BytesIO] = []
        self.complete = False
        self._max_files = max_files
        self._field, self._value, self._headers = bytearray(), bytearray(), {}
        self._data: io.BytesIO | None = None
        callbacks = {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": lambda data, start, end: self._data.write(data[start:end]),
            "on_part_end": self._end,
            "on_end": self._finished,
        }
        self.parser = MultipartParser(boundary, callbacks)

    def _begin(self) -> None:
        self._headers, self._data = {}, None

    def _header_end(self) -> None:
        self._headers[bytes(self._field).lower()] = bytes(self._value)
        self._field, self._value = bytearray(), bytearray()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name != FILE_FIELD:
            raise HttpError(
                422, f"unexpected form field {name!r}: send each photo in a field named {FILE_FIELD}"
            )
        if len(self.files) >= self._max_files:
            raise HttpError(413, f"over the limit of {self._max_files} photos per request")
        self._data = io.BytesIO()
        self._data.name = options.get(b"filename", FILE_FIELD.encode()).decode("utf-8", "replace")

    def _end(self) -> None:
        self._data.seek(0)
        self.files.append(self._data)

    def _finished(self) -> None:
        self.complete = True


async def read_uploads(request: Request, limits: UploadLimits) -> list[io.BytesIO]:
    """The photos of a ``multipart/form-data`` request (fields named ``file``), in order.

    Raises :class:`HttpError`: 415 for another kind of body, 413 over ``limits`` (before reading
    when ``Content-Length`` says so), 408 past the deadline, 400 for a malformed or cut-off body,
    422 for other fields or no photo.
    """
    boundary = multipart_boundary(request.headers.get("content-type"))
    announced = request.headers.get("content-length")
    if announced is not None and announced.isdigit() and int(announced) > limits.max_bytes:
        raise limits.too_large()
    received = 0
    try:
        parts = _Parts(boundary, limits.max_files)
        async with asyncio.timeout(limits.timeout_s):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limits.max_bytes:
                    raise limits.too_large()
                parts.parser.write(chunk)
    except TimeoutError:
        raise HttpError(408, f"the upload did not arrive within {limits.timeout_s:g} s") from None
    except ClientDisconnect:
        raise HttpError(400, "the client went away before the upload ended") from None
    except FormParserError as exc:
        raise HttpError(400, f"the multipart/form-data body is malformed ({exc})") from None
    if not parts.complete:
        raise HttpError(400, "the multipart/form-data body ends before its closing boundary")
    if not parts.files:
        raise HttpError(422, f"no photo: send it in a form field named {FILE_FIELD}")
    return parts.files
