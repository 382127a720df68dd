"""The stand-in's /ws endpoint and the single ordered channel every server event goes through.

Like ComfyUI's ``send_sync`` + ``publish_loop``: any thread calls :meth:`Hub.emit`, which hands the
message to the event loop; one task sends messages in order, to one client (``sid``) or to every
socket (``sid`` None). A socket that connects without ``clientId`` gets a generated sid; the first
text message may be ``feature_flags``, answered with the server's flags.

Invariant: messages reach sockets in exactly the order they were emitted, so history written
before the final ``executing`` is always visible once that message arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from airflow_comfy.protocol.events import encode_binary_frame

_RAW = -1  # the event of a frame sent as is (never a ComfyUI binary event type: those are u32)
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}
_SEND_ERRORS = (aiohttp.ClientError, ConnectionError, RuntimeError)
log = logging.getLogger(__name__)


class Hub:
    """Open sockets by sid, their feature flags, and the ordered outbound queue."""

    def __init__(self, silenced: Callable[[], bool], queue_info: Callable[[], dict[str, Any]]) -> None:
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.transports: dict[str, asyncio.BaseTransport] = {}
        self.flags: dict[str, dict[str, Any]] = {}
        self._silenced = silenced
        self._queue_info = queue_info
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[str | int, Any, str | None]] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the publish task (call on the loop)."""
        self._loop = loop
        self._queue = asyncio.Queue()
        self._task = loop.create_task(self._publish())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for ws in list(self.sockets.values()):
            with contextlib.suppress(asyncio.TimeoutError, *_SEND_ERRORS):
                await asyncio.wait_for(ws.close(), 2.0)

    def supports_metadata(self, sid: str | None) -> bool:
        return sid is not None and bool(self.flags.get(sid, {}).get("supports_preview_metadata"))

    def emit(self, event: str | int, data: Any, sid: str | None) -> None:
        """Thread-safe: queue one message for the publish task."""
        loop, queue = self._loop, self._queue
        if loop is None or queue is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed while stopping
            loop.call_soon_threadsafe(queue.put_nowait, (event, data, sid))

    def emit_raw(self, frame: str | bytes) -> None:
        """Thread-safe: queue one frame sent as is to every socket (fault injection)."""
        self.emit(_RAW, frame, None)

    async def flush(self, timeout: float) -> None:
        """Wait until every message emitted so far has been handed to the sockets (call on the loop)."""
        if self._queue is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout)

    def drop_all(self) -> None:
        """Abort every socket's connection, as a crash or network cut would (call on the loop)."""
        for sid in list(self.sockets):
            self.sockets.pop(sid, None)
            self.flags.pop(sid, None)
            transport = self.transports.pop(sid, None)
            if transport is not None and hasattr(transport, "abort"):
                transport.abort()

    async def _publish(self) -> None:
        assert self._queue is not None
        while True:
            event, data, sid = await self._queue.get()
            try:
                await self.send(event, data, sid)
            finally:
                self._queue.task_done()

    async def send(self, event: str | int, data: Any, sid: str | None) -> None:
        if self._silenced():
            return
        targets = (
            list(self.sockets.values()) if sid is None else [self.sockets[sid]] if sid in self.sockets else []
        )
        if not targets:
            return
        if event == _RAW:
            frame: bytes | str = data
        elif isinstance(event, int):
            frame = encode_binary_frame(event, bytes(data))
        else:
            frame = json.dumps({"type": event, "data": data})
        for ws in targets:
            try:
                if isinstance(frame, bytes):
                    await ws.send_bytes(frame)
                else:
                    await ws.send_str(frame)
            except _SEND_ERRORS as err:
                log.debug("stand-in: send to a closing socket failed: %s", err)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            self.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = ws
        self.flags[sid] = {}
        if request.transport is not None:
            self.transports[sid] = request.transport
        try:
            await self.send("status", {"status": self._queue_info(), "sid": sid}, sid)
            first = True
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    message = json.loads(msg.data)
                except ValueError:
                    continue
                if first and isinstance(message, dict) and message.get("type") == "feature_flags":
                    data = message.get("data")
                    self.flags[sid] = data if isinstance(data, dict) else {}
                    await self.send("feature_flags", SERVER_FEATURES, sid)
                first = False
        finally:
            if self.sockets.get(sid) is ws:
                self.sockets.pop(sid, None)
                self.flags.pop(sid, None)
                self.transports.pop(sid, None)
        return ws
