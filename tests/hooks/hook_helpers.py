"""Helpers for the hook tests: fast settings, small workflows, and a tiny fake proxy server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from airflow_comfy.hooks.comfyui import ComfyUIHook
from airflow_comfy.hooks.connection import ComfyUISettings, SecretHeaders

FAST = {
    "retry_min_wait": 0.01,
    "retry_max_wait": 0.05,
    "max_retries": 3,
    "connect_timeout": 2.0,
    "read_timeout": 10.0,
}


def fast_settings(base_url: str, headers: dict[str, str] | None = None, **overrides: Any) -> ComfyUISettings:
    values = {**FAST, **overrides}
    return ComfyUISettings(
        conn_id="comfyui_test", base_url=base_url, auth_headers=SecretHeaders(headers or {}), **values
    )


def fast_hook(base_url: str, headers: dict[str, str] | None = None, **overrides: Any) -> ComfyUIHook:
    return ComfyUIHook(settings=fast_settings(base_url, headers, **overrides))


def empty_save(prefix: str = "hooktest/img", size: int = 16, batch: int = 1) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": batch, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def slow_save(seconds: float, steps: int = 10, prefix: str = "hooktest/slow") -> dict[str, Any]:
    """EmptyImage → StandInDelay(seconds) → SaveImage (stand-in only; interruptible between steps)."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {
            "class_type": "StandInDelay",
            "inputs": {"image": ["1", 0], "seconds": seconds, "steps": steps},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def gated_save(gate: str = "gate", prefix: str = "hooktest/gated") -> dict[str, Any]:
    """EmptyImage → StandInGate(gate) → SaveImage: runs until the test calls ``server.gates.release(gate)``.

    Use it where a prompt must still be running when the test looks: unlike a delay, it cannot end
    early on a slow machine. Not interruptible while held (an interrupt acts at the next node).
    """
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "StandInGate", "inputs": {"image": ["1", 0], "gate": gate}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def failing(message: str = "boom from the test") -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "StandInFail", "inputs": {"image": ["1", 0], "message": message}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "hooktest/never"}},
    }


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@contextmanager
def fake_http(status: int, body: bytes, content_type: str = "text/html") -> Iterator[tuple[str, list[dict]]]:
    """A one-purpose HTTP server on 127.0.0.1 answering every request with ``status`` and ``body``.

    Yields its base URL and the list of requests it saw (method, path, headers).
    """
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="proxy"')
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
