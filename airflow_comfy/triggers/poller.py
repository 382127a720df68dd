"""The poller the triggers of one event loop share: one status round per server for all prompts.

:class:`SharedPoller` watches every prompt of one server for all the triggers of one event loop.
Each round runs :func:`airflow_comfy.protocol.flows.read_statuses` for the prompts that are due:
one ``/queue`` read for all of them, and ``/history/<id>`` only for those not in that snapshot
(the order and why it is right are explained there, once).

Invariants:
- one :class:`SharedPoller` per event loop and server settings, so a triggerer with a thousand
  deferred tasks makes about one request per round plus one per prompt that left the queue;
- a watched prompt is checked at least every ``interval`` seconds (each watch keeps its own bound;
  due times sit on a grid of the interval, so watches of one interval share their rounds);
- the poller runs only while a watch is registered, never busy-loops (it sleeps until the next due
  time), and survives an exception in a round (the due watches receive it as a transient error).
Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from types import TracebackType

from airflow_comfy.exceptions import ComfyUIConnectionError, ComfyUIError
from airflow_comfy.hooks.async_client import AsyncComfyUIClient
from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.protocol import flows, urls
from airflow_comfy.protocol.states import PromptStatus

log = logging.getLogger(__name__)

MIN_INTERVAL = 0.05  # seconds: the shortest check interval a watch gets (no busy loop)
_SLACK = 0.005  # seconds: due times this close together share one round
_PollerKey = tuple[int, str, tuple[tuple[str, str], ...], str, float, float, int, float, float]
_POLLERS: dict[_PollerKey, SharedPoller] = {}


class PollRoundError(ComfyUIConnectionError):
    """A round of the shared poller failed unexpectedly; treated as transient by the watchers."""


class PromptWatch:
    """One prompt registered with a :class:`SharedPoller`; read its statuses with :meth:`next`.

    Use as a context manager (or call :meth:`close`): a closed watch is unregistered at once.
    """

    def __init__(self, poller: SharedPoller, prompt_id: str, interval: float) -> None:
        self.prompt_id = prompt_id
        self.interval = max(float(interval), MIN_INTERVAL)
        self.due = 0.0  # loop time of the next check; 0 = in the next round
        self.closed = False
        self._poller = poller
        self._ready = asyncio.Event()
        self._result: PromptStatus | ComfyUIError | None = None

    async def next(self, timeout: float) -> PromptStatus | None:
        """The next status read for this prompt, or ``None`` if ``timeout`` seconds pass first.

        Raises the :class:`ComfyUIError` of a round that could not read the status.
        """
        if self.closed:
            raise RuntimeError(f"the watch of prompt {self.prompt_id} is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._ready.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._poller.ensure_running()  # restarts a poller that was cancelled under us
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 2 * self.interval + 1.0)):
                    await self._ready.wait()
        result, self._result = self._result, None
        self._ready.clear()
        if isinstance(result, ComfyUIError):
            raise result.with_traceback(None)  # one error object may reach many watches
        return result

    def deliver(self, result: PromptStatus | ComfyUIError) -> None:
        """Called by the poller: the latest read replaces any unread one."""
        if not self.closed:
            self._result = result
            self._ready.set()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._poller.unregister(self)

    def __enter__(self) -> PromptWatch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SharedPoller:
    """Reads the status of every watched prompt of one server, in rounds (see the module docstring)."""

    def __init__(self, settings: ComfyUISettings, loop: asyncio.AbstractEventLoop) -> None:
        self.client = AsyncComfyUIClient(settings)
        self.loop = loop
        self.watches: set[PromptWatch] = set()
        self.rounds = 0  # for tests and benchmarks
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def watch(self, prompt_id: str, interval: float) -> PromptWatch:
        """Register ``prompt_id``; its first check is in the next round, then every ``interval`` s."""
        watch = PromptWatch(self, prompt_id, interval)
        self.watches.add(watch)
        self._wake.set()
        self.ensure_running()
        return watch

    def unregister(self, watch: PromptWatch) -> None:
        self.watches.discard(watch)
        if not self.watches:
            self._wake.set()  # let the loop see that nobody is left, and end

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def ensure_running(self) -> None:
        if self.watches and not self.running:
            self._task = self.loop.create_task(
                self._run(), name=f"comfyui-poller {self.client.settings.base_url}"
            )

    async def _run(self) -> None:
        try:
            while self.watches:
                now = self.loop.time()
                next_due = min(w.due for w in self.watches)
                if next_due > now + _SLACK:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(next_due - now):
                            await self._wake.wait()
                    continue
                await asyncio.sleep(0)  # triggers starting in this same tick join this round
                started = self.loop.time()
                due = [w for w in self.watches if w.due <= started + _SLACK]
                for w in due:
                    w.due = _next_tick(started + _SLACK, w.interval)  # a tick within _SLACK is this one
                self.rounds += 1
                try:
                    await self._round(due)
                except Exception as exc:  # one broken round must not end the waits of every trigger
                    log.exception("Polling ComfyUI %s failed", self.client.settings.base_url)
                    error = PollRoundError(
                        f"Polling ComfyUI {urls.redact_url(self.client.settings.base_url)} failed: "
                        f"{type(exc).__name__}: {str(exc)[:200]}"
                    )
                    for w in due:
                        w.deliver(error)
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def _round(self, due: list[PromptWatch]) -> None:
        wanted = {w.prompt_id for w in due if not w.closed}
        try:
            found = await self.client.run(flows.read_statuses(wanted))
        except ComfyUIError as exc:  # the queue read failed: every due watch hears of it
            for w in due:
                w.deliver(exc)
            return
        for w in due:
            if w.prompt_id in found:
                w.deliver(found[w.prompt_id])


def shared_poller(settings: ComfyUISettings) -> SharedPoller:
    """The poller of this event loop for ``settings`` (made on first use, dropped with its loop)."""
    loop = asyncio.get_running_loop()
    key: _PollerKey = (
        id(loop),
        settings.base_url,
        tuple(sorted(settings.auth_headers.items())),
        str(settings.verify),
        settings.connect_timeout,
        settings.read_timeout,
        settings.max_retries,
        settings.retry_min_wait,
        settings.retry_max_wait,
    )
    poller = _POLLERS.get(key)
    if poller is None or poller.loop is not loop:
        # Drop pollers of loops that are gone (tests, dag.test()) before adding a new one.
        for stale in [k for k, p in _POLLERS.items() if p.loop is not loop and not p.loop.is_running()]:
            _POLLERS.pop(stale, None)
        poller = _POLLERS[key] = SharedPoller(settings, loop)
    return poller


def _next_tick(now: float, interval: float) -> float:
    """The first multiple of ``interval`` after ``now``: watches of one interval share rounds."""
    return (math.floor(now / interval) + 1) * interval
