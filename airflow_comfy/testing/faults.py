"""Fault switches of the stand-in server, for resilience tests.

A :class:`Faults` object is shared between the test thread (which flips switches) and the server's
event loop (which consults them in a middleware and in the WebSocket hub). Socket-level actions
(refusing connections, dropping WebSockets) are delegated to callbacks the server installs.

Invariant: switches only change how requests are answered, never the queue or history; a
``fail_next`` budget is consumed by exactly one matching request per unit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

INTERNAL_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"


@dataclass
class _FailRule:
    remaining: int
    status: int
    path: str | None


class Faults:
    """Switches: refuse connections, fail the next N requests, drop, silence, refuse WebSockets, delay."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_FailRule] = []
        self.delay_seconds = 0.0
        self.silenced = False
        self.refusing = False
        self.websocket_refusal: int | None = None
        self.stale_history = False
        self._on_refuse: Callable[[bool], None] | None = None
        self._on_drop: Callable[[], None] | None = None
        self._on_raw: Callable[[str | bytes], None] | None = None

    def bind(
        self,
        on_refuse: Callable[[bool], None],
        on_drop: Callable[[], None],
        on_raw: Callable[[str | bytes], None] | None = None,
    ) -> None:
        """Called by the server: how to stop/start listening, drop sockets and send raw frames."""
        self._on_refuse, self._on_drop, self._on_raw = on_refuse, on_drop, on_raw

    def refuse_connections(self, refuse: bool = True) -> None:
        """Stop (True) or resume (False) listening on the same port; existing sockets stay."""
        if self._on_refuse is None:
            raise RuntimeError("the stand-in server is not running")
        self._on_refuse(refuse)
        self.refusing = refuse

    def fail_next(self, n: int, status: int = 500, path: str | None = None) -> None:
        """The next ``n`` requests (whose path starts with ``path``, if given) answer ``status``."""
        with self._lock:
            self._rules.append(_FailRule(int(n), int(status), path))

    def take_failure(self, path: str) -> int | None:
        """The status to answer for ``path`` now, consuming one unit of a matching rule."""
        with self._lock:
            for rule in self._rules:
                if rule.remaining > 0 and (rule.path is None or path.startswith(rule.path)):
                    rule.remaining -= 1
                    status = rule.status
                    self._rules = [r for r in self._rules if r.remaining > 0]
                    return status
        return None

    def drop_websockets(self) -> None:
        """Abort every open /ws connection now (clients see the connection drop)."""
        if self._on_drop is None:
            raise RuntimeError("the stand-in server is not running")
        self._on_drop()

    def refuse_websockets(self, status: int | None = 403) -> None:
        """Answer every /ws upgrade with ``status`` (a proxy without WebSockets); ``None`` turns it off.

        Sockets already open stay open (drop them with :meth:`drop_websockets`).
        """
        self.websocket_refusal = None if status is None else int(status)

    def send_raw_websocket_frame(self, frame: str | bytes) -> None:
        """Send ``frame`` as is (text for ``str``, binary for ``bytes``) to every open /ws socket, in
        order with the server's own messages: garbage, huge or malformed frames for resilience tests."""
        if self._on_raw is None:
            raise RuntimeError("the stand-in server is not running")
        self._on_raw(frame)

    def silence_websockets(self, silent: bool = True) -> None:
        """Keep sockets open but send nothing (messages meanwhile are lost, not queued)."""
        self.silenced = silent

    def serve_stale_history(self, stale: bool = True) -> None:
        """Answer ``{}`` to ``GET /history/<id>`` without a query string, as a caching proxy that
        holds an old answer for that URL would (a cache-busted read or the listing still see the truth)."""
        self.stale_history = stale

    def delay_responses(self, seconds: float) -> None:
        """Wait ``seconds`` before handling each HTTP request (0 turns it off)."""
        self.delay_seconds = max(0.0, float(seconds))

    def reset(self) -> None:
        with self._lock:
            self._rules = []
        self.delay_seconds, self.silenced, self.websocket_refusal = 0.0, False, None
        self.stale_history = False
