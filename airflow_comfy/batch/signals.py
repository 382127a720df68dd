"""Wake-ups for a running batch: one WebSocket per server, any message starts the next round.

ComfyUI broadcasts a ``status`` message whenever its queue changes and sends this batch's
``client_id`` the progress and end messages of its prompts; each is a reason to read the statuses
now instead of at the next ``check_interval``. The messages are not parsed for outcomes: the
round's status reads stay the one source of truth (:mod:`airflow_comfy.protocol.flows`).

Invariants: one daemon thread per server, each blocking at most one second at a time and ending
when :meth:`ServerSignals.close` is called (joined there); a socket that cannot be opened or drops
is reopened at most :data:`MAX_RECONNECTS` times, then that server is polled only (one warning);
:meth:`ServerSignals.wait` never waits longer than it is told (plus :data:`MIN_GAP`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_comfy.exceptions import ComfyUIError

if TYPE_CHECKING:
    from airflow_comfy.hooks.comfyui import ComfyUIHook

MAX_RECONNECTS = 5
RECONNECT_PAUSE = 2.0
#: The shortest time between two woken rounds: a busy server's messages cost at most this many reads.
MIN_GAP = 0.05


class ServerSignals:
    """Sets one event whenever any server of the batch sends a message."""

    def __init__(self, hook: ComfyUIHook, servers: Sequence[str], client_id: str, log: Any) -> None:
        self.event = threading.Event()
        self._closing = threading.Event()
        self._log = log
        self._last = 0.0
        self._threads = [
            threading.Thread(
                target=self._listen, args=(hook, server, client_id), daemon=True, name=f"batch-ws-{n}"
            )
            for n, server in enumerate(servers)
        ]
        for thread in self._threads:
            thread.start()

    def wait(self, timeout: float) -> None:
        """Until a message came (since the last wait) or ``timeout`` seconds passed, and at least
        :data:`MIN_GAP` seconds after the previous wait ended."""
        if self.event.wait(timeout):
            rest = MIN_GAP - (time.monotonic() - self._last)
            if rest > 0:
                self._closing.wait(rest)
        self.event.clear()
        self._last = time.monotonic()

    def _listen(self, hook: ComfyUIHook, server: str, client_id: str) -> None:
        failures = 0
        while not self._closing.is_set() and failures <= MAX_RECONNECTS:
            try:
                socket = hook.client(server).websocket(client_id).connect()
            except ComfyUIError:
                failures += 1
                self._closing.wait(RECONNECT_PAUSE)
                continue
            try:
                while not self._closing.is_set():
                    if socket.recv(1.0) is not None:
                        self.event.set()
            except ComfyUIError:
                failures += 1
                self.event.set()  # a dropped socket may mean a restart: look now
            finally:
                socket.close()
        if failures > MAX_RECONNECTS:
            self._log.warning("No WebSocket to %s; its prompts are checked by polling only", server)

    def close(self) -> None:
        self._closing.set()
        for thread in self._threads:
            thread.join(timeout=5)
