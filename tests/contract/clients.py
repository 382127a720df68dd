"""The contract tests' clients of a ComfyUI server: HTTP (:class:`Comfy`) and WebSocket (:class:`Socket`).

Both keep to the test's own prompts so that they can talk to a shared live server: ``Comfy``
remembers what it submitted and its cleanup only deletes or interrupts those; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
import websocket

HTTP_TIMEOUT = 15.0


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
