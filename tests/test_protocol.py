"""The wire format: requests, responses, errors and alerts round-trip as JSON lines."""

from __future__ import annotations

import json
import os

import pytest

from dupwatch.daemon.wire import protocol
from dupwatch.daemon.wire.protocol import ErrorCode, ProtocolError, RemoteError
from dupwatch.index.errors import NotAnImage, NotIndexed, StoreError, TruncatedImage


def test_request_round_trip() -> None:
    line = protocol.encode_request("query", path="/tmp/a.jpg", radius=8)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    request = protocol.decode_request(line)
    assert request == protocol.Request("query", {"path": "/tmp/a.jpg", "radius": 8})


def test_non_utf8_path_round_trips_as_ascii() -> None:
    raw = b"/tmp/caf\xe9-\xff.jpg"  # Latin-1 bytes: not valid UTF-8
    path = os.fsdecode(raw)
    line = protocol.encode_request("query", path=path)
    assert line.isascii()
    decoded = protocol.decode_request(line).args["path"]
    assert os.fsencode(decoded) == raw


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"garbage\n", ErrorCode.BAD_JSON),
        (b"\xff\xfe\n", ErrorCode.BAD_JSON),
        (b"[1, 2]\n", ErrorCode.BAD_JSON),
        (b'{"op": "status"}\n', ErrorCode.UNSUPPORTED_VERSION),
        (b'{"v": 2, "op": "status"}\n', ErrorCode.UNSUPPORTED_VERSION),
        (b'{"v": 1}\n', ErrorCode.BAD_REQUEST),
        (b'{"v": 1, "op": 7}\n', ErrorCode.BAD_REQUEST),
        (b'{"v": 1, "op": "rm -rf"}\n', ErrorCode.UNKNOWN_OP),
        (b" " * (protocol.MAX_REQUEST_BYTES + 1), ErrorCode.LINE_TOO_LONG),
    ],
)
def test_bad_requests_name_their_fault(line: bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.decode_request(line)
    assert caught.value.code == code
    response = protocol.error_for(caught.value)
    assert response["v"] == 1 and response["ok"] is False
    assert response["error"]["code"] == code.value
    assert response["error"]["message"]


def test_ok_response_round_trips() -> None:
    line = protocol.encode(protocol.ok(files=3, roots=["/a"]))
    assert protocol.check_response(protocol.decode_line(line)) == {
        "v": 1,
        "ok": True,
        "files": 3,
        "roots": ["/a"],
    }


def test_fingerprint_error_comes_back_as_its_class() -> None:
    sent = protocol.error_for(NotAnImage("/tmp/x.jpg", "not an image Pillow knows"))
    wire = json.loads(protocol.encode(sent))
    assert wire["error"]["code"] == "not_an_image"
    assert wire["error"]["path"] == "/tmp/x.jpg"
    with pytest.raises(NotAnImage) as caught:
        protocol.check_response(wire)
    assert caught.value.path == "/tmp/x.jpg"
    assert caught.value.reason == "not an image Pillow knows"


def test_subclass_codes_win_over_base_codes() -> None:
    assert protocol.error_for(TruncatedImage("/a.png", "ends early"))["error"]["code"] == (
        "truncated_image"
    )
    assert protocol.error_for(StoreError("map full"))["error"]["code"] == "store_error"
    with pytest.raises(NotIndexed, match="b.jpg"):
        protocol.check_response(protocol.error_for(NotIndexed("/b.jpg: not indexed")))


def test_unknown_code_becomes_remote_error() -> None:
    with pytest.raises(RemoteError) as caught:
        protocol.check_response(protocol.error("forbidden", "uid 1000 may not"))
    assert caught.value.code == "forbidden"


def test_response_of_another_version_is_refused() -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.check_response({"v": 2, "ok": True})
    assert caught.value.code == ErrorCode.UNSUPPORTED_VERSION


def test_duplicate_event_shape() -> None:
    match = {"path": "/a.jpg", "distance": 3, "kind": "near"}
    event = protocol.duplicate_event("/b.jpg", [match])
    assert event["event"] == "duplicate"
    assert event["path"] == "/b.jpg"
    assert event["matches"] == [match]
    assert event["time"].endswith("+00:00") and "T" in event["time"]
    assert json.loads(protocol.encode(event)) == event
