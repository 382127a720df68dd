"""The hook's WebSocket client for ComfyUI's ``/ws?clientId=…`` (``websocket-client``).

Yields parsed text events (:class:`~airflow_comfy.protocol.events.WsEvent`) and decoded binary
frames (:class:`~airflow_comfy.protocol.events.BinaryEvent`: preview images, TEXT, previews with
metadata). The handshake carries the connection's auth headers and TLS settings.

Cost: ComfyUI sends a ``progress_state`` message listing every node of the workflow after each node
(about 100 MB of text for a 1,000-node workflow). Nothing here needs it, so such frames are dropped
by their first bytes, before any JSON parsing; and websocket-client's pure-Python UTF-8 check is
skipped (the JSON decoder checks the text it parses anyway).

Size: websocket-client has no limit on a message's size, so the frame reader is replaced by one that
refuses, from the frame header and before reading the payload, a frame longer than the
connection's ``extra.max_ws_frame_bytes`` (and a fragmented message that grows past it): the
socket is closed with a :class:`ComfyUIConnectionError` saying so, and waiters go on by polling.

Invariants: every receive has a timeout (``recv`` returns ``None`` when it passes, so callers'
loops stay bounded); a dropped socket raises :class:`ComfyUIConnectionError` naming the redacted
URL; header values never appear in errors or logs.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import websocket
from websocket._abnf import continuous_frame, frame_buffer

from airflow_comfy.exceptions import ComfyUIConnectionError
from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.protocol.events import (
    SKIPPED_PREFIXES,
    BinaryEvent,
    WsEvent,
    decode_binary_frame,
    parse_text_frame,
)
from airflow_comfy.protocol.urls import redact_url, ws_url

Event = WsEvent | BinaryEvent


class FrameTooLarge(websocket.WebSocketProtocolException):
    """A frame (or fragmented message) longer than the connection's limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a message of {size} bytes or more (limit {limit})")
        self.size, self.limit = size, limit


class _BoundedFrames(frame_buffer):
    """websocket-client's frame reader, refusing a frame longer than ``limit`` from its header."""

    def __init__(self, recv_fn: Any, limit: int) -> None:
        super().__init__(recv_fn, True)
        self.limit = limit

    def recv_length(self) -> None:
        super().recv_length()
        if self.length is not None and self.length > self.limit:
            raise FrameTooLarge(self.length, self.limit)


class _BoundedMessages(continuous_frame):
    """websocket-client's reassembly of fragmented messages, refusing one that grows past ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__(False, True)
        self.limit = limit

    def add(self, frame: Any) -> None:
        size = len(frame.data) + (len(self.cont_data[1]) if self.cont_data else 0)
        if size > self.limit:
            self.cont_data = None
            raise FrameTooLarge(size, self.limit)
        super().add(frame)


__all__ = ["SKIPPED_PREFIXES", "ComfyUIWebSocket", "Event"]


class ComfyUIWebSocket:
    """One open ``/ws`` socket for one ``client_id``."""

    def __init__(self, settings: ComfyUISettings, client_id: str) -> None:
        self.client_id = client_id
        self.url = ws_url(settings.base_url, client_id)
        self.shown_url = redact_url(self.url)
        self._settings = settings
        self._ws: websocket.WebSocket | None = None

    def connect(self) -> ComfyUIWebSocket:
        settings = self._settings
        sslopt: dict[str, Any] = {}
        if self.url.startswith("wss://"):
            if settings.verify is False:
                sslopt = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
            elif isinstance(settings.verify, str):
                sslopt = {"ca_certs": settings.verify}
        try:
            self._ws = websocket.create_connection(
                self.url,
                timeout=settings.connect_timeout,
                header=[f"{name}: {value}" for name, value in settings.auth_headers.items()],
                sslopt=sslopt,
                enable_multithread=True,
                suppress_origin=True,
                skip_utf8_validation=True,
            )
        except websocket.WebSocketBadStatusException as exc:
            raise ComfyUIConnectionError(
                f"ComfyUI refused the WebSocket {self.shown_url} with HTTP {exc.status_code}: "
                "check the credentials and that a proxy in front of ComfyUI forwards WebSocket upgrades",
                url=self.shown_url,
            ) from None
        except (OSError, websocket.WebSocketException) as exc:
            raise ComfyUIConnectionError(
                f"Cannot open the ComfyUI WebSocket {self.shown_url}: {type(exc).__name__}: {str(exc)[:160]}",
                url=self.shown_url,
            ) from None
        limit = settings.max_ws_frame_bytes
        self._ws.frame_buffer = _BoundedFrames(self._ws._recv, limit)
        self._ws.cont_frame = _BoundedMessages(limit)
        return self

    def send_feature_flags(self, **flags: Any) -> None:
        """Announce client features, e.g. ``supports_preview_metadata=True`` (binary type 4 previews)."""
        self._require().send(json.dumps({"type": "feature_flags", "data": flags}))

    def recv(self, timeout: float) -> Event | None:
        """The next usable event, or ``None`` if none arrived within ``timeout`` seconds.

        Frames that are not ComfyUI events (pings, malformed JSON) are skipped within the same bound.
        """
        ws = self._require()
        deadline = time.monotonic() + max(timeout, 0.001)
        while (remaining := deadline - time.monotonic()) > 0:
            ws.settimeout(remaining)
            try:
                opcode, data = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                return None
            except FrameTooLarge as exc:
                self.close()
                raise ComfyUIConnectionError(
                    f"The ComfyUI WebSocket {self.shown_url} sent {exc}: closed it. Raise the connection's "
                    "extra.max_ws_frame_bytes if this server really sends such messages",
                    url=self.shown_url,
                ) from None
            except (OSError, websocket.WebSocketException) as exc:
                self.close()
                raise ComfyUIConnectionError(
                    f"The ComfyUI WebSocket {self.shown_url} dropped: {type(exc).__name__}",
                    url=self.shown_url,
                ) from None
            event: Event | None = None
            if opcode == websocket.ABNF.OPCODE_TEXT:
                if not data.startswith(SKIPPED_PREFIXES):
                    event = parse_text_frame(data)
            elif opcode == websocket.ABNF.OPCODE_BINARY:
                event = decode_binary_frame(data)
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                self.close()
                raise ComfyUIConnectionError(
                    f"ComfyUI closed the WebSocket {self.shown_url}", url=self.shown_url
                )
            if event is not None:
                return event
        return None

    def events(self, idle_timeout: float) -> Iterator[Event]:
        """Events until ``idle_timeout`` seconds pass without any (then the iterator ends)."""
        while True:
            event = self.recv(idle_timeout)
            if event is None:
                return
            yield event

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._ws.connected

    def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(OSError, websocket.WebSocketException):
                self._ws.close(timeout=1)
            self._ws = None

    def _require(self) -> websocket.WebSocket:
        if self._ws is None:
            raise ComfyUIConnectionError(
                f"The ComfyUI WebSocket {self.shown_url} is not open", url=self.shown_url
            )
        return self._ws

    def __enter__(self) -> ComfyUIWebSocket:
        return self.connect() if self._ws is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
