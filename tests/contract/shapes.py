"""Helpers for the ComfyUI contract tests: recorded transcripts, body *shapes*, HTTP and WebSocket clients.

A shape comparison looks at keys, value types and list structure, never at volatile values (ids,
``number``, timestamps, ``sid``, colours, output file names, temp names, hashes, traceback paths,
exception messages, ``argv``). A few keys whose values are part of the contract (error ``type``s,
``class_type``, ``status_str``...) are compared by value too, see ``STABLE_KEYS``.
"""

from __future__ import annotations

import contextlib
import json
import random
import struct
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import requests
import websocket
from contract_data import CONTRACT_DIR

HTTP_TIMEOUT = 15.0

# Keys whose scalar (or list-of-scalar) values are part of the contract and compared literally.
STABLE_KEYS = frozenset(
    {
        "type",
        "class_type",
        "dependent_outputs",
        "status_str",
        "completed",
        "node_type",
        "exception_type",
        "input_name",
        "subfolder",
        "node_id",
        "display_node",
        "real_node_id",
        "parent_node",
        "display_node_id",
        "parent_node_id",
        "state",
        "name",
        "output_node",
        "category",
        "output",
        "output_name",
        "output_is_list",
        "python_module",
    }
)


def load(name: str) -> dict[str, Any]:
    """One recorded transcript (``name`` without .json)."""
    return json.loads((CONTRACT_DIR / f"{name}.json").read_text())


def workflows() -> dict[str, dict[str, Any]]:
    return load("workflows")["workflows"]


def token() -> str:
    """A short unique token for prompt ids, client ids, prefixes and file names."""
    return uuid.uuid4().hex[:10]


# --------------------------------------------------------------------------------------------------
# shapes


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def signature(value: Any) -> Any:
    """A hashable description of a value's shape (used to tell homogeneous lists from tuples)."""
    if isinstance(value, dict):
        return ("object", tuple(sorted((k, signature(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("list", tuple(signature(v) for v in value))
    return _kind(value)


def _is_scalar_or_scalar_list(value: Any) -> bool:
    if isinstance(value, list):
        return all(not isinstance(v, dict | list) for v in value)
    return not isinstance(value, dict)


def shape_diff(
    expected: Any,
    actual: Any,
    path: str = "$",
    stable: frozenset[str] = STABLE_KEYS,
    key: str | None = None,
) -> list[str]:
    """Differences in shape between a recorded value and a live one (empty list: same shape).

    * objects: same key set, recursively;
    * lists: an empty recorded list accepts any list; a recorded list whose items all have the same
      shape is *homogeneous* (every actual item must have that shape, the length is a value); any
      other list is a tuple (same length, compared position by position);
    * scalars: same JSON type (null, bool, int, float, string);
    * under a key in ``stable`` a scalar or a list of scalars must also be equal.
    """
    diffs: list[str] = []
    if key is not None and key in stable and _is_scalar_or_scalar_list(expected):
        if expected != actual:
            diffs.append(f"{path}: expected value {expected!r}, got {actual!r}")
        return diffs
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected object, got {_kind(actual)} {_short(actual)}"]
        missing = [k for k in expected if k not in actual]
        extra = [k for k in actual if k not in expected]
        if missing:
            diffs.append(f"{path}: missing keys {missing}")
        if extra:
            diffs.append(f"{path}: unexpected keys {extra}")
        for k in expected:
            if k in actual:
                diffs += shape_diff(expected[k], actual[k], f"{path}.{k}", stable, k)
        return diffs
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path}: expected list, got {_kind(actual)} {_short(actual)}"]
        if not expected:
            return diffs
        signatures = {signature(v) for v in expected}
        if len(signatures) == 1:
            for i, item in enumerate(actual):
                diffs += shape_diff(expected[0], item, f"{path}[{i}]", stable)
            return diffs
        if len(expected) != len(actual):
            return [f"{path}: expected a {len(expected)}-tuple, got {len(actual)} items {_short(actual)}"]
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            diffs += shape_diff(e, a, f"{path}[{i}]", stable)
        return diffs
    if _kind(expected) != _kind(actual):
        diffs.append(f"{path}: expected {_kind(expected)}, got {_kind(actual)} {_short(actual)}")
    return diffs


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def assert_shape(
    expected: Any, actual: Any, what: str = "body", stable: frozenset[str] = STABLE_KEYS
) -> None:
    diffs = shape_diff(expected, actual, stable=stable)
    assert not diffs, f"{what} differs from the recorded shape:\n  " + "\n  ".join(diffs[:40])


def rebind(value: Any, mapping: dict[str, str]) -> Any:
    """Replace recorded ids (dict keys and string values) by the ones of this run."""
    if isinstance(value, dict):
        return {mapping.get(k, k): rebind(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [rebind(v, mapping) for v in value]
    if isinstance(value, str):
        return mapping.get(value, value)
    return value


def collapse(types: Iterable[str]) -> list[str]:
    """Collapse consecutive repeats: a a b a -> a b a."""
    out: list[str] = []
    for t in types:
        if not out or out[-1] != t:
            out.append(t)
    return out


def is_subsequence(needle: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needle)


def media_type(headers: Any) -> str | None:
    value = headers.get("Content-Type")
    return value.split(";")[0].strip() if value else None


# --------------------------------------------------------------------------------------------------
# HTTP


def tiny_png(seed: int | None = None, size: int = 4) -> bytes:
    """A valid RGB PNG whose pixels (and so bytes) depend on ``seed``."""
    rnd = random.Random(seed)
    rows = b"".join(b"\x00" + bytes(rnd.randrange(256) for _ in range(size * 3)) for _ in range(size))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


class Comfy:
    """A thin ``requests`` client for one ComfyUI server that remembers the prompts it submitted."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.submitted: list[str] = []

    # raw requests -----------------------------------------------------------------------------
    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url + path, timeout=HTTP_TIMEOUT, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.post(self.url + path, timeout=HTTP_TIMEOUT, **kwargs)

    def replay(self, request: dict[str, Any], **overrides: Any) -> requests.Response:
        """Send a recorded request (``overrides`` may replace ``json``, ``query``, ``headers``, ``path``)."""
        req = {**request, **overrides}
        kwargs: dict[str, Any] = {"params": req.get("query"), "headers": req.get("headers")}
        if "json" in req:
            kwargs["json"] = req["json"]
        elif "raw_body" in req:
            kwargs["data"] = req["raw_body"].encode()
        response = self.session.request(req["method"], self.url + req["path"], timeout=HTTP_TIMEOUT, **kwargs)
        if req["path"] == "/prompt" and req["method"] == "POST" and response.status_code == 200:
            self.submitted.append(response.json()["prompt_id"])
        return response

    # prompts ----------------------------------------------------------------------------------
    def submit(self, prompt: dict[str, Any], **extra: Any) -> dict[str, Any]:
        response = self.post("/prompt", json={"prompt": prompt, **extra})
        assert response.status_code == 200, f"POST /prompt: {response.status_code} {response.text[:500]}"
        body = response.json()
        self.submitted.append(body["prompt_id"])
        return body

    def history(self, prompt_id: str) -> dict[str, Any]:
        response = self.get(f"/history/{prompt_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_history(self, prompt_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """The history entry of ``prompt_id`` once it exists (bounded wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.history(prompt_id)
            if body:
                return body[prompt_id]
            time.sleep(0.05)
        raise AssertionError(f"no history for {prompt_id} within {timeout}s")

    def queue(self) -> dict[str, Any]:
        response = self.get("/queue")
        assert response.status_code == 200, response.text
        return response.json()

    def queue_ids(self) -> tuple[list[str], list[str]]:
        q = self.queue()
        return [item[1] for item in q["queue_running"]], [item[1] for item in q["queue_pending"]]

    def wait_running(self, prompt_id: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running, _ = self.queue_ids()
            if prompt_id in running:
                return
            time.sleep(0.05)
        raise AssertionError(f"{prompt_id} did not start running within {timeout}s")

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for: {what}")

    def interrupt(self, prompt_id: str) -> None:
        self.post("/interrupt", json={"prompt_id": prompt_id})

    def cleanup(self) -> None:
        """Remove our pending prompts and interrupt ours that still run; leave other clients' alone."""
        try:
            running, pending = self.queue_ids()
        except (requests.RequestException, AssertionError):
            return
        mine_pending = [p for p in pending if p in self.submitted]
        if mine_pending:
            self.post("/queue", json={"delete": mine_pending})
        for prompt_id in running:
            if prompt_id in self.submitted:
                self.interrupt(prompt_id)
        self.session.close()


# --------------------------------------------------------------------------------------------------
# WebSocket

BINARY_EVENTS = {
    1: "PREVIEW_IMAGE",
    2: "UNENCODED_PREVIEW_IMAGE",
    3: "TEXT",
    4: "PREVIEW_IMAGE_WITH_METADATA",
}


@dataclass
class Message:
    kind: str  # "text" | "binary"
    type: str  # text type, or "binary:EVENT"
    data: Any = None  # text: data; binary: decoded header (dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_id(self) -> str | None:
        if isinstance(self.data, dict):
            if "prompt_id" in self.data:
                return self.data["prompt_id"]
            meta = self.data.get("metadata")
            if isinstance(meta, dict):
                return meta.get("prompt_id")
        return None


def parse_binary(payload: bytes) -> Message:
    event_type = struct.unpack(">I", payload[:4])[0]
    name = BINARY_EVENTS.get(event_type, f"UNKNOWN_{event_type}")
    info: dict[str, Any] = {"event_type": event_type, "length": len(payload)}
    if event_type == 1:
        fmt = struct.unpack(">I", payload[4:8])[0]
        info["image_format"] = {1: "JPEG", 2: "PNG"}.get(fmt, str(fmt))
        info["image_magic_hex"] = payload[8:16].hex()
    elif event_type == 3:
        n = struct.unpack(">I", payload[4:8])[0]
        info["node_id"] = payload[8 : 8 + n].decode()
        info["text"] = payload[8 + n :].decode()
    elif event_type == 4:
        n = struct.unpack(">I", payload[4:8])[0]
        info["metadata"] = json.loads(payload[8 : 8 + n])
        info["image_magic_hex"] = payload[8 + n : 16 + n].hex()
    return Message("binary", f"binary:{name}", info)


def recorded_messages(messages: list[dict[str, Any]]) -> list[Message]:
    out = []
    for m in messages:
        if m["kind"] == "text":
            out.append(Message("text", m["type"], m["data"], m))
        else:
            out.append(Message("binary", f"binary:{m['event']}", m, m))
    return out


class Socket:
    """A ``websocket-client`` connection to /ws that records every frame it reads."""

    def __init__(self, http_url: str, client_id: str | None, timeout: float = 10.0) -> None:
        ws_url = "ws" + http_url[len("http") :] + "/ws"
        if client_id is not None:
            ws_url += f"?clientId={client_id}"
        self.client_id = client_id
        self.conn = websocket.create_connection(ws_url, timeout=timeout)
        self.messages: list[Message] = []

    def recv(self, timeout: float) -> Message | None:
        self.conn.settimeout(max(timeout, 0.01))
        try:
            opcode, payload = self.conn.recv_data()
        except websocket.WebSocketTimeoutException:
            return None
        if opcode == websocket.ABNF.OPCODE_TEXT:
            obj = json.loads(payload)
            msg = Message("text", obj["type"], obj.get("data"), obj)
        elif opcode == websocket.ABNF.OPCODE_BINARY:
            msg = parse_binary(payload)
        else:  # pragma: no cover - close/ping frames
            return None
        self.messages.append(msg)
        return msg

    def read_until(self, stop: Callable[[Message], bool], timeout: float = 60.0) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"WebSocket: condition not met within {timeout}s; got {[m.type for m in self.messages]}"
                )
            msg = self.recv(remaining)
            if msg is not None and stop(msg):
                return msg

    def drain(self, quiet: float = 0.5, limit: float = 5.0) -> None:
        """Read until the socket has been quiet for ``quiet`` seconds (at most ``limit`` seconds)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.recv(min(quiet, deadline - time.monotonic())) is None:
                return

    def send_json(self, obj: Any) -> None:
        self.conn.send(json.dumps(obj))

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken socket
            self.conn.close()


def ours(messages: list[Message], prompt_id: str) -> list[Message]:
    """Drop messages about other prompts (a shared server may run other clients' prompts)."""
    return [m for m in messages if m.prompt_id in (None, prompt_id)]


def keys_by_type(messages: list[Message]) -> dict[str, set[str]]:
    """For each text message type, the union of its ``data`` keys."""
    out: dict[str, set[str]] = {}
    for m in messages:
        if m.kind == "text" and isinstance(m.data, dict):
            out.setdefault(m.type, set()).update(m.data)
    return out
