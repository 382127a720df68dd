"""One WebSocket per server and event loop that tells the shared pollers *when* to look.

ComfyUI broadcasts a ``status`` message to every socket whenever its queue changes (see
:mod:`airflow_comfy.protocol.events`). A :class:`QueueListener` keeps one socket open to a server
(its own client id; the connection's auth headers, TLS settings and path prefix) for all the
:class:`~airflow_comfy.triggers.poller.SharedPoller` s of one event loop that watch prompts there,
and calls their ``signal`` callback when a prompt may have ended: the greeting ``status`` after
(re)connecting (anything may have happened while no socket was open), a ``status`` whose
``queue_remaining`` dropped (an entry left the queue: history written, or a pending prompt deleted),
a ``status`` without a readable count, and an end message. An enqueue (+1) or a dequeue (unchanged)
cannot end a prompt and wakes nobody.

The listener is an optimisation only. Invariants:
- it never raises into a poller and never delays a round: a refused upgrade, a dropped or silent
  socket (keepalive pings end it), a frame over :data:`MAX_FRAME` or garbage only end the current
  socket; it reconnects after a bounded, growing, jittered pause, and logs one warning per server
  until a socket stays up for :data:`HEALTHY_AFTER` seconds again;
- frames are bounded (:data:`MAX_FRAME`, at most :data:`MAX_QUEUE` buffered) and only small ones are
  parsed (``progress_state`` never): see :func:`~airflow_comfy.protocol.events.queue_signal`;
- it runs only while a subscriber is registered; the last unsubscribe closes the socket.
Nothing here blocks the event loop (the TLS context is built in a thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
from collections.abc import Callable
from typing import NoReturn

from websockets.asyncio.client import ClientConnection, connect

from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.protocol.events import queue_signal
from airflow_comfy.protocol.ids import new_client_id
from airflow_comfy.protocol.urls import redact_url, ws_url

log = logging.getLogger(__name__)

MAX_FRAME = 4 * 2**20  # bytes: a larger frame (e.g. a huge broadcast preview) ends the socket
MAX_QUEUE = 4  # frames buffered before the socket stops reading (backpressure, bounded memory)
PING_INTERVAL = 20.0  # seconds between keepalive pings; a silent dead socket ends after 2 of these
BACKOFF_FIRST = 1.0  # seconds before the first reconnect
BACKOFF_MAX = 60.0  # the longest pause between attempts
HEALTHY_AFTER = 30.0  # seconds a socket must stay up to reset the backoff and the warning
_ListenerKey = tuple[int, str, tuple[tuple[str, str], ...], str]
_LISTENERS: dict[_ListenerKey, QueueListener] = {}
_WARNED: set[str] = set()  # servers whose fallback was logged and that have not been healthy since

Subscriber = Callable[[], None]


class QueueListener:
    """The socket of one server for the pollers of one event loop (see the module docstring)."""

    def __init__(self, settings: ComfyUISettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.client_id = new_client_id()
        self.url = ws_url(settings.base_url, self.client_id)
        self.shown_url = redact_url(ws_url(settings.base_url, "listener"))
        self.subscribers: list[Subscriber] = []
        self.connected = False
        self.connections = 0  # sockets opened, for tests and benchmarks
        self.signals = 0  # times the subscribers were called
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, callback: Subscriber) -> None:
        self.subscribers.append(callback)
        if self._task is None or self._task.done():
            self._task = self.loop.create_task(self._run(), name=f"comfyui-listener {self.shown_url}")

    def unsubscribe(self, callback: Subscriber) -> None:
        with contextlib.suppress(ValueError):
            self.subscribers.remove(callback)
        if not self.subscribers and self._task is not None:
            self._task.cancel()  # closes the socket; a new subscriber starts a fresh task
            self._task = None
            self.connected = False

    def _signal(self) -> None:
        self.signals += 1
        for callback in list(self.subscribers):
            try:
                callback()
            except Exception:  # a subscriber's bug must not end the socket of the others
                log.exception("A ComfyUI queue signal subscriber failed")

    async def _run(self) -> None:
        failures = 0
        ssl_context = None
        while self.subscribers:
            opened_at: float | None = None
            try:
                if self.url.startswith("wss://") and ssl_context is None:
                    ssl_context = await asyncio.to_thread(_ssl_context, self.settings.verify)
                async with self._connect(ssl_context) as ws:
                    opened_at = self.loop.time()
                    self.connected, self.connections = True, self.connections + 1
                    await self._read(ws)  # ends only by raising (ConnectionClosed when the socket ends)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever went wrong, interval polling goes on
                reason = self.settings.auth_headers.scrub(f"{type(exc).__name__}: {exc}")[:200]
            finally:
                self.connected = False
            healthy = opened_at is not None and self.loop.time() - opened_at >= HEALTHY_AFTER
            failures = 1 if healthy else failures + 1
            if healthy:
                _WARNED.discard(self.settings.base_url)
            self._fell_back(reason)
            pause = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1))
            await asyncio.sleep(pause * random.uniform(0.5, 1.0))

    def _connect(self, ssl_context: ssl.SSLContext | None) -> connect:
        return connect(
            self.url,
            additional_headers=list(self.settings.auth_headers.items()),
            compression=None,
            open_timeout=self.settings.connect_timeout,
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_INTERVAL,
            close_timeout=2.0,
            max_size=MAX_FRAME,
            max_queue=MAX_QUEUE,
            ssl=ssl_context,
        )

    async def _read(self, ws: ClientConnection) -> NoReturn:
        """Until the socket ends (it raises then): signal on every frame that may announce an end."""
        last: int | None = None
        while True:
            frame = await ws.recv(decode=False)  # no UTF-8 check: the JSON parser checks what it reads
            signal = queue_signal(frame)
            if signal is not None:
                count = signal.queue_remaining
                if signal.ended or signal.greeting or count is None or last is None or count < last:
                    self._signal()
                last = count if count is not None else last
            await asyncio.sleep(0)  # a flood of frames never starves the loop

    def _fell_back(self, reason: str) -> None:
        server = self.settings.base_url
        if server in _WARNED:
            log.debug("ComfyUI WebSocket %s unavailable: %s", self.shown_url, reason)
            return
        _WARNED.add(server)
        log.warning(
            "ComfyUI WebSocket %s unavailable (%s): deferred waits on %s fall back to polling at their "
            "poll_interval; reconnecting in the background",
            self.shown_url,
            reason,
            redact_url(server),
        )


def queue_listener(settings: ComfyUISettings) -> QueueListener:
    """The listener of this event loop for the server and socket settings of ``settings``."""
    loop = asyncio.get_running_loop()
    key: _ListenerKey = (
        id(loop),
        settings.base_url,
        tuple(sorted(settings.auth_headers.items())),
        str(settings.verify),
    )
    listener = _LISTENERS.get(key)
    if listener is None or listener.loop is not loop:
        gone = [k for k, o in _LISTENERS.items() if o.loop is not loop and not o.loop.is_running()]
        for stale in gone:
            _LISTENERS.pop(stale, None)
        listener = _LISTENERS[key] = QueueListener(settings, loop)
    return listener


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS context of ``verify`` as the HTTP client reads it: False, True or a CA file/folder."""
    if isinstance(verify, str):
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    context = ssl.create_default_context()
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
