"""The socket wire format: newline-delimited JSON with a protocol version in every object.

Requests are `{"v": 1, "op": OP, ...args}`; responses `{"v": 1, "ok": true, ...}` or
`{"v": 1, "ok": false, "error": {"code": CODE, "message": TEXT}}`. Pure code: no sockets here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from dupwatch.index.errors import (
    DecompressionBomb,
    DupwatchError,
    EmptyFile,
    FingerprintError,
    IndexLocked,
    IndexMismatch,
    MissingFile,
    NotAnImage,
    NotIndexed,
    StoreError,
    TooLarge,
    TruncatedImage,
    UnreadableFile,
)

PROTOCOL_VERSION = 1
# A response or an alert. A groups answer for a large collection runs to megabytes (a path
# can be 4 KiB), and the service is the user's own: this only stops a runaway.
MAX_RESPONSE_BYTES = 1 << 30
# A request is a few paths (4 KiB each at most, 6 bytes a byte once escaped) and numbers:
# anything longer is garbage or abuse, and each connection may buffer this much.
MAX_REQUEST_BYTES = 64 << 10
# How much of a bad value an error message quotes back.
QUOTE_CHARS = 80

OPS = ("query", "status", "subscribe", "watch", "unwatch", "groups")


class ErrorCode(StrEnum):
    """Every `error.code` the server sends."""

    BAD_JSON = "bad_json"
    BAD_REQUEST = "bad_request"
    UNKNOWN_OP = "unknown_op"
    UNSUPPORTED_VERSION = "unsupported_version"
    LINE_TOO_LONG = "line_too_long"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    FORBIDDEN = "forbidden"
    NOT_INDEXED = "not_indexed"
    MISSING_FILE = "missing_file"
    UNREADABLE_FILE = "unreadable_file"
    EMPTY_FILE = "empty_file"
    NOT_AN_IMAGE = "not_an_image"
    TRUNCATED_IMAGE = "truncated_image"
    DECOMPRESSION_BOMB = "decompression_bomb"
    TOO_LARGE = "too_large"
    FINGERPRINT_FAILED = "fingerprint_failed"
    INDEX_MISMATCH = "index_mismatch"
    INDEX_LOCKED = "index_locked"
    STORE_ERROR = "store_error"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL = "internal"


# Most specific first: the server picks the first class the error is an instance of, and the
# client maps a code back to its class through the same table.
ERROR_CODES: dict[type[DupwatchError], ErrorCode] = {
    NotIndexed: ErrorCode.NOT_INDEXED,
    MissingFile: ErrorCode.MISSING_FILE,
    UnreadableFile: ErrorCode.UNREADABLE_FILE,
    EmptyFile: ErrorCode.EMPTY_FILE,
    NotAnImage: ErrorCode.NOT_AN_IMAGE,
    TruncatedImage: ErrorCode.TRUNCATED_IMAGE,
    DecompressionBomb: ErrorCode.DECOMPRESSION_BOMB,
    TooLarge: ErrorCode.TOO_LARGE,
    FingerprintError: ErrorCode.FINGERPRINT_FAILED,
    IndexMismatch: ErrorCode.INDEX_MISMATCH,
    IndexLocked: ErrorCode.INDEX_LOCKED,
    StoreError: ErrorCode.STORE_ERROR,
}


class ProtocolError(DupwatchError):
    """A line that is not a valid request (or response); `code` says which rule it broke."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class RemoteError(DupwatchError):
    """The service answered with an error that has no local exception class."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class Request:
    """One decoded request: the operation and its arguments (everything but `v` and `op`)."""

    op: str
    args: dict[str, Any] = field(default_factory=dict)


def encode(obj: dict[str, Any]) -> bytes:
    """One JSON line. ensure_ascii keeps surrogate-escaped (non-UTF-8) paths round-tripping."""
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"


def quote(value: Any) -> str:
    """repr() of a client's value for an error message, cut to QUOTE_CHARS."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"<a deeply nested {type(value).__name__}>"
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 3] + "..."


def decode_line(line: bytes, *, limit: int = MAX_RESPONSE_BYTES) -> dict[str, Any]:
    """Parse one line into a JSON object; raises ProtocolError (bad_json) otherwise."""
    if len(line) > limit:
        raise ProtocolError(ErrorCode.LINE_TOO_LONG, f"line longer than {limit} bytes")
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"not JSON: {exc}") from None
    except RecursionError:  # the C decoder recurses once per [ or {
        raise ProtocolError(ErrorCode.BAD_JSON, "not JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, "a request must be a JSON object")
    return obj


def decode_request(line: bytes) -> Request:
    """Parse and validate one request line; raises ProtocolError naming what is wrong."""
    obj = decode_line(line, limit=MAX_REQUEST_BYTES)
    version = obj.pop("v", None)
    if version is None:
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f'missing "v": {PROTOCOL_VERSION}')
    if type(version) is not int or version != PROTOCOL_VERSION:  # not true, not 1.0
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {quote(version)} not supported; this service speaks "
            f"{PROTOCOL_VERSION}",
        )
    op = obj.pop("op", None)
    if not isinstance(op, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, 'missing "op" (a string)')
    if op not in OPS:
        raise ProtocolError(
            ErrorCode.UNKNOWN_OP, f"unknown op {quote(op)}; known: {', '.join(OPS)}"
        )
    return Request(op, obj)


def encode_request(op: str, **args: Any) -> bytes:
    """A request line for `op` with its arguments."""
    return encode({"v": PROTOCOL_VERSION, "op": op, **args})


def ok(**result: Any) -> dict[str, Any]:
    """A success response object."""
    return {"v": PROTOCOL_VERSION, "ok": True, **result}


def error(code: ErrorCode | str, message: str, **details: Any) -> dict[str, Any]:
    """An error response object; `details` (such as path, reason) go inside `error`."""
    body = {"code": str(code), "message": message, **details}
    return {"v": PROTOCOL_VERSION, "ok": False, "error": body}


def error_for(exc: DupwatchError) -> dict[str, Any]:
    """The error response for a known dupwatch exception."""
    if isinstance(exc, ProtocolError):
        return error(exc.code, exc.message)
    code = next((c for cls, c in ERROR_CODES.items() if isinstance(exc, cls)), ErrorCode.INTERNAL)
    if isinstance(exc, FingerprintError):
        return error(code, str(exc), path=exc.path, reason=exc.reason)
    return error(code, str(exc))


def exception_for(err: dict[str, Any]) -> DupwatchError:
    """Turn a response's `error` object back into the exception it stands for."""
    code = str(err.get("code", ErrorCode.INTERNAL))
    message = str(err.get("message", "unknown error"))
    cls = next((c for c, known in ERROR_CODES.items() if known == code), None)
    if cls is not None and issubclass(cls, FingerprintError) and "path" in err:
        return cls(err["path"], str(err.get("reason", message)))
    if cls is not None and not issubclass(cls, FingerprintError):
        return cls(message)
    return RemoteError(code, message)


def check_response(obj: dict[str, Any]) -> dict[str, Any]:
    """Return a success response, or raise the error it carries (ProtocolError on a bad one)."""
    if obj.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"the service speaks protocol {obj.get('v')!r}; this client speaks {PROTOCOL_VERSION}",
        )
    if obj.get("ok") is True:
        return obj
    err = obj.get("error")
    if not isinstance(err, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"malformed response: {obj!r}")
    raise exception_for(err)


def now_iso() -> str:
    """The current time as ISO 8601 with the UTC offset, as alerts carry it."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def duplicate_event(path: str, matches: list[dict[str, Any]]) -> dict[str, Any]:
    """The `duplicate` alert of DESIGN.md for `path` with its matches (already JSON)."""
    return {"event": "duplicate", "path": path, "matches": matches, "time": now_iso()}


def missed_event(count: int) -> dict[str, Any]:
    """Told to a subscriber whose queue filled: how many alerts it did not receive."""
    return {"event": "missed", "count": count, "time": now_iso()}
