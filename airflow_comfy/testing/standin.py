"""``StandInServer``: the stand-in ComfyUI running on its own event loop in a background thread.

Start it as a context manager (or ``start()``/``stop()``); it binds 127.0.0.1 (port 0 = ephemeral),
keeps the port across ``restart()`` and ``faults.refuse_connections``, exposes what it saw
(``requests``, ``submissions``) for assertions, and ``gates`` that hold ``StandInGate`` nodes until
the test releases them (see :mod:`airflow_comfy.testing.gates`).

Invariants: every blocking call from the caller's thread has a timeout; ``stop()`` ends the loop
thread and the worker thread it started and closes the listening socket.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from airflow_comfy.testing.engine import Engine
from airflow_comfy.testing.faults import Faults
from airflow_comfy.testing.files import Folders
from airflow_comfy.testing.gates import Gates
from airflow_comfy.testing.hub import Hub
from airflow_comfy.testing.loopthread import TIMEOUT, LoopThread
from airflow_comfy.testing.server import StandInState, make_app

_T = TypeVar("_T")
#: Seconds ``stop()`` lets requests still being handled (an open WebSocket whose client does not
#: answer the close) finish before they are cut: a stopped server goes away, as a killed one would.
SHUTDOWN_TIMEOUT = 2.0


class StandInServer:
    """A real HTTP + WebSocket server that behaves like ComfyUI 0.3.64 (see the package docs)."""

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 0,
        node_delays: Mapping[str, float] | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the stand-in server only binds a loopback address")
        self.host = host
        self.port = port
        self.folders = Folders.create(base_dir)
        self.node_delays = dict(node_delays or {})
        self.faults = Faults()
        self.gates = Gates()
        self._loop_thread = LoopThread("comfy-standin-loop")
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._state: StandInState | None = None
        self._held = False

    # -- public API ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_dir(self) -> Path:
        return self.folders.base

    @property
    def submissions(self) -> list[str]:
        return self._require_state().submissions

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self._require_state().requests

    @property
    def engine(self) -> Engine:
        return self._require_state().engine

    def start(self) -> StandInServer:
        self._loop_thread.start()
        try:
            self._call(self._astart())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._loop_thread.stop(self._astop() if self._runner is not None else None)

    def restart(self) -> None:
        """Lose queue, history, cache and the number counter; keep files, port, faults and records.

        Open WebSockets are dropped, as a real restart would.
        """
        self._call(self._arestart())

    def hold(self, held: bool = True) -> None:
        """Keep every prompt queued (True) or let the queue run again (False); survives ``restart()``.

        Makes "a prompt is waiting" a deterministic moment: submissions are accepted and reported
        as pending, nothing starts until released.
        """
        self._held = held
        engine = self.engine
        (engine.held.set if held else engine.held.clear)()
        with engine.mutex:
            engine.not_empty.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until nothing is queued or running and every event was handed to the sockets."""
        state = self._require_state()
        if not state.engine.wait_idle(timeout):
            raise TimeoutError(f"the stand-in server was still busy after {timeout} s")
        self._call(state.hub.flush(timeout))

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------
    def _require_state(self) -> StandInState:
        if self._state is None:
            raise RuntimeError("the stand-in server is not running")
        return self._state

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float = TIMEOUT) -> _T:
        return self._loop_thread.call(coro, timeout)

    def _new_engine(self, hub: Hub) -> Engine:
        engine = Engine(self.folders, hub.emit, hub.supports_metadata, self.node_delays, self.gates)
        if self._held:
            engine.held.set()
        engine.start()
        return engine

    async def _astart(self) -> None:
        loop = asyncio.get_running_loop()
        hub = Hub(lambda: self.faults.silenced, lambda: self._require_state().engine.queue_info())
        hub.start(loop)
        self._state = StandInState(self.folders, self._new_engine(hub), hub, self.faults)
        self._runner = web.AppRunner(
            make_app(self._state), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await self._runner.setup()
        await self._listen()
        self.faults.bind(self._refuse_from_thread, self._drop_from_thread, hub.emit_raw)

    async def _listen(self) -> None:
        assert self._runner is not None
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(1024)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()

    async def _unlisten(self) -> None:
        if self._site is not None:
            site, self._site = self._site, None
            await site.stop()

    async def _astop(self) -> None:
        state = self._state
        if state is not None:
            await asyncio.to_thread(state.engine.stop)
            await state.hub.stop()
        await self._unlisten()
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None
        await asyncio.get_running_loop().shutdown_default_executor()

    async def _arestart(self) -> None:
        state = self._require_state()
        await asyncio.to_thread(state.engine.stop)
        state.hub.drop_all()
        state.engine = self._new_engine(state.hub)

    def _refuse_from_thread(self, refuse: bool) -> None:
        self._call(self._unlisten() if refuse else self._relisten())

    async def _relisten(self) -> None:
        if self._site is None:
            await self._listen()

    def _drop_from_thread(self) -> None:
        state = self._require_state()

        async def drop() -> None:
            state.hub.drop_all()

        self._call(drop())
