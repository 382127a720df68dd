"""Helpers for the stand-in server tests: a WebSocket recorder and request shortcuts."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import requests
import websocket
from contract_data import load_transcript
from PIL import Image

from airflow_comfy.protocol.events import BINARY_EVENT_NAMES, decode_binary_frame
from airflow_comfy.protocol.urls import ws_url
from airflow_comfy.testing import StandInServer

__all__ = ["WsRecorder", "gated", "history", "load_transcript", "png_bytes", "run", "submit", "upload"]


class WsRecorder:
    """A /ws client that records ``(type, data)``; binary frames become ``binary:<NAME>``."""

    def __init__(self, base_url: str, client_id: str | None, feature_flags: bool = False) -> None:
        url = ws_url(base_url, client_id) if client_id else base_url.replace("http", "ws", 1) + "/ws"
        self.sock = websocket.create_connection(url, timeout=10)
        self.messages: list[tuple[str, Any]] = []
        self.record_one()  # the status with our sid
        if feature_flags:
            self.sock.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
            self.record_one()

    def record_one(self, timeout: float = 10.0) -> tuple[str, Any]:
        self.sock.settimeout(timeout)
        opcode, frame = self.sock.recv_data()
        if opcode == websocket.ABNF.OPCODE_BINARY:
            event = decode_binary_frame(frame)
            assert event is not None
            item: tuple[str, Any] = (f"binary:{BINARY_EVENT_NAMES[event.event_type]}", event)
        else:
            message = json.loads(frame)
            item = (message["type"], message["data"])
        self.messages.append(item)
        return item

    def until(self, predicate: Any, timeout: float = 20.0) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = self.record_one(max(0.05, deadline - time.monotonic()))
            if predicate(*item):
                return item
        raise AssertionError(f"no matching message in {timeout}s; got {self.types()}")

    def until_end(self, prompt_id: str, timeout: float = 20.0) -> None:
        self.until(
            lambda t, d: t == "executing" and d.get("node") is None and d["prompt_id"] == prompt_id, timeout
        )

    def drain(self, quiet: float = 0.3) -> None:
        """Record until nothing arrives for ``quiet`` seconds."""
        while True:
            try:
                self.record_one(quiet)
            except websocket.WebSocketTimeoutException:
                return

    def types(self) -> list[str]:
        return [t for t, _ in self.messages]

    def close(self) -> None:
        self.sock.close()


def gated(prompt: dict[str, Any], node_id: str, gate: str = "gate") -> dict[str, Any]:
    """``prompt`` with node ``node_id`` (an IMAGE → IMAGE node) replaced by a StandInGate named ``gate``.

    The run then holds in that node until the test calls ``server.gates.release(gate)``: the test
    acts (interrupt, delete, ...) at a moment that does not depend on the machine's speed.
    """
    prompt = json.loads(json.dumps(prompt))
    prompt[node_id] = {
        "class_type": "StandInGate",
        "inputs": {"image": prompt[node_id]["inputs"]["image"], "gate": gate},
    }
    return prompt


def submit(server: StandInServer, prompt: dict[str, Any], **extra: Any) -> dict[str, Any]:
    response = requests.post(server.url + "/prompt", json={"prompt": prompt, **extra}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def history(server: StandInServer, prompt_id: str) -> dict[str, Any]:
    return requests.get(f"{server.url}/history/{prompt_id}", timeout=10).json()


def run(server: StandInServer, prompt: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Submit, wait for the server to go idle, return the history entry."""
    prompt_id = submit(server, prompt, **extra)["prompt_id"]
    server.wait_idle(30)
    return history(server, prompt_id)[prompt_id]


def upload(server: StandInServer, name: str, data: bytes, **fields: str) -> requests.Response:
    files = {"image": (name, data, "image/png")}
    return requests.post(server.url + "/upload/image", files=files, data=fields, timeout=10)


def png_bytes(color: tuple[int, int, int] = (10, 20, 30), size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()
