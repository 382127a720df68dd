"""An asyncio event loop on a background thread, for servers that sync code (tests, demos) starts.

Invariants: every call from the caller's thread waits at most its timeout (then the coroutine is
cancelled and ``TimeoutError`` raised); :meth:`LoopThread.stop` runs an optional clean-up coroutine,
ends the thread and closes the loop, and is safe to call twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")
TIMEOUT = 30.0


class LoopThread:
    """Runs ``loop.run_forever()`` on a daemon thread named ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} is already running")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float = TIMEOUT) -> _T:
        """Run ``coro`` on the loop and wait for its result (at most ``timeout`` seconds)."""
        if self._loop is None:
            coro.close()
            raise RuntimeError(f"{self.name} is not running")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"{self.name} did not answer within {timeout:g} s") from None

    def stop(self, cleanup: Coroutine[Any, Any, Any] | None = None, timeout: float = TIMEOUT) -> None:
        """Run ``cleanup`` (if any) on the loop, then stop the loop and join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            if cleanup is not None:
                cleanup.close()
            return
        try:
            if cleanup is not None:
                self.call(cleanup, timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None
