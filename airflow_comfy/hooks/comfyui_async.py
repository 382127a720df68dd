"""The async ComfyUI client used in the triggerer (``httpx``), and the poller its triggers share.

The client implements only what waiting and cancelling need — /history, /queue, the prompt status,
cancel — with the same rules as the sync hook: the status comes from
:mod:`airflow_comfy.protocol.states`, errors from :mod:`airflow_comfy.protocol.errors`, retries only
for what can succeed on retry, with exponential backoff and a bound.

:class:`SharedPoller` watches every prompt of one server for all the triggers of one event loop:
each round reads /queue once for all the prompts that are due, and GET /history/<id> only for the
due prompts that are not in that queue snapshot (a prompt that left the queue has ended or is lost).
Reading /queue *before* /history is safe here: ComfyUI moves a prompt from the queue to the history
atomically, so a prompt absent from the snapshot is already in the history unless it is lost.

Invariants:
- one ``httpx.AsyncClient`` (one connection pool) and one :class:`SharedPoller` per event loop and
  server settings, so a triggerer with a thousand deferred tasks holds a handful of connections and
  makes about one request per round plus one per prompt that left the queue, not a thousand bursts;
- a watched prompt is checked at least every ``interval`` seconds (each watch keeps its own bound;
  due times sit on a grid of the interval, so watches of one interval share their rounds);
- the poller runs only while a watch is registered, never busy-loops (it sleeps until the next due
  time), and survives an exception in a round (the due watches receive it as a transient error).
Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
from types import TracebackType
from typing import Any

import httpx

from airflow_comfy.exceptions import (
    ComfyUIConnectionError,
    ComfyUIError,
    ComfyUIHTTPError,
    ComfyUIResponseError,
)
from airflow_comfy.hooks.connection import MAX_JSON_BYTES, ComfyUISettings
from airflow_comfy.protocol import errors, urls
from airflow_comfy.protocol.states import (
    PromptState,
    PromptStatus,
    queue_statuses,
    resolve_status,
    status_from_history,
)

log = logging.getLogger(__name__)

# key -> (the loop the client belongs to, the client). The loop is kept referenced so its id cannot be
# reused by a new loop while the entry exists (a client must never be used from another loop).
_CLIENTS: dict[
    tuple[int, str, tuple[tuple[str, str], ...], str], tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]
] = {}
_POOL = httpx.Limits(max_connections=32, max_keepalive_connections=16)


def _shared_client(settings: ComfyUISettings) -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    key = (id(loop), settings.base_url, tuple(sorted(settings.auth_headers.items())), str(settings.verify))
    owner, client = _CLIENTS.get(key, (None, None))
    if client is None or owner is not loop or client.is_closed:
        # Drop clients of loops that are gone (tests, dag.test()) before adding a new one.
        for stale in [k for k, (lp, c) in _CLIENTS.items() if c.is_closed or lp is not loop]:
            _CLIENTS.pop(stale, None)
        client = httpx.AsyncClient(
            headers=dict(settings.auth_headers),
            verify=settings.verify,
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
            limits=_POOL,
        )
        _CLIENTS[key] = (loop, client)
    return client


class AsyncComfyUIClient:
    """Async calls to one ComfyUI server with the settings of one connection."""

    def __init__(self, settings: ComfyUISettings) -> None:
        self.settings = settings

    async def request(
        self, method: str, path: str, *, json_body: Any = None, retries: int | None = None
    ) -> Any:
        """Send a request, retrying transient failures; return the decoded JSON (``None`` if empty)."""
        attempts = 1 + (self.settings.max_retries if retries is None else retries)
        for attempt in range(1, attempts + 1):
            try:
                return await self._send(method, path, json_body)
            except ComfyUIError as exc:
                if attempt >= attempts or not errors.is_retryable(exc):
                    raise
                delay = min(self.settings.retry_max_wait, self.settings.retry_min_wait * 2 ** (attempt - 1))
                await asyncio.sleep(delay * (1 + random.random() * 0.2))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, method: str, path: str, json_body: Any) -> Any:
        url = urls.endpoint(self.settings.base_url, path)
        shown = urls.redact_url(url)
        client = _shared_client(self.settings)
        try:
            async with client.stream(method, url, json=json_body) as response:
                body = await _read_limited(response, MAX_JSON_BYTES, method, shown)
        except httpx.TimeoutException:
            raise errors.timeout_error(method, shown, self.settings.read_timeout) from None
        except httpx.HTTPError as exc:
            raise errors.connection_error(method, shown, f"{type(exc).__name__}: {exc}"[:200]) from None
        excerpt = self.settings.auth_headers.scrub(body[:812].decode("utf-8", "replace"))[:300]
        if response.status_code >= 400:
            raise errors.http_status_error(method, shown, response.status_code, excerpt)
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # raised below: the decode error holds the whole body
            pass
        raise errors.not_json_error(method, shown, response.headers.get("Content-Type", ""), excerpt)

    async def get_object(self, path: str) -> dict[str, Any]:
        body = await self.request("GET", path)
        if not isinstance(body, dict):
            raise ComfyUIResponseError(f"ComfyUI GET {path} answered {type(body).__name__}, not an object")
        return body

    async def get_prompt_status(self, prompt_id: str) -> PromptStatus:
        """History first, then the queue, then the history again if the prompt was in neither."""
        found = status_from_history(prompt_id, await self.get_object(urls.history_path(prompt_id)))
        if found is not None:
            return found
        queue = await self.get_object(urls.QUEUE)
        status = resolve_status(prompt_id, {}, queue)
        if status.state is PromptState.NOT_FOUND:
            status = resolve_status(prompt_id, await self.get_object(urls.history_path(prompt_id)), queue)
        return status

    async def cancel_prompt(self, prompt_id: str) -> str:
        """Stop exactly this prompt (same rules as ``ComfyUIHook.cancel_prompt``)."""
        try:
            await self.request("POST", urls.job_path(prompt_id, "cancel"), retries=1)
            return "cancelled through /api/jobs"
        except ComfyUIHTTPError as exc:
            if exc.status_code not in (404, 405):
                raise
        status = await self.get_prompt_status(prompt_id)
        if status.state is PromptState.PENDING:
            await self.request("POST", urls.QUEUE, json_body={"delete": [prompt_id]})
            # It may have started between the two calls: interrupting by id is harmless otherwise.
            if (await self.get_prompt_status(prompt_id)).state is PromptState.RUNNING:
                await self.request("POST", urls.INTERRUPT, json_body={"prompt_id": prompt_id})
                return "interrupted (it started while being removed from the queue)"
            return "removed from the queue"
        if status.state is PromptState.RUNNING:
            await self.request("POST", urls.INTERRUPT, json_body={"prompt_id": prompt_id})
            return "interrupted"
        return f"nothing to do (it is {status.state.value})"


# --- the shared poller -------------------------------------------------------------------------------

MIN_INTERVAL = 0.05  # seconds: the shortest check interval a watch gets (no busy loop)
_SLACK = 0.005  # seconds: due times this close together share one round
_HISTORY_CONCURRENCY = 16  # GET /history/<id> in flight at once within one round
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
        try:
            queue = await self.client.get_object(urls.QUEUE)
        except ComfyUIError as exc:
            for w in due:
                w.deliver(exc)
            return
        wanted = {w.prompt_id for w in due if not w.closed}
        found = queue_statuses(queue, wanted)
        left = await self._histories(wanted - found.keys())
        for w in due:
            w.deliver(found.get(w.prompt_id) or left[w.prompt_id])

    async def _histories(self, prompt_ids: set[str]) -> dict[str, PromptStatus | ComfyUIError]:
        """GET /history/<id> for each prompt that is not in the queue (a few in flight at once)."""
        limit = asyncio.Semaphore(_HISTORY_CONCURRENCY)

        async def one(prompt_id: str) -> PromptStatus | ComfyUIError:
            async with limit:
                try:
                    body = await self.client.get_object(urls.history_path(prompt_id))
                except ComfyUIError as exc:
                    return exc
            return resolve_status(prompt_id, body, None)  # not in the queue: history or NOT_FOUND

        ordered = sorted(prompt_ids)
        return dict(zip(ordered, await asyncio.gather(*(one(p) for p in ordered)), strict=True))


async def _read_limited(response: httpx.Response, limit: int, method: str, shown: str) -> bytearray:
    """The body of a streamed response, refusing more than ``limit`` bytes (a hostile server)."""
    declared = int(response.headers.get("Content-Length") or 0)
    if declared > limit:
        raise ComfyUIResponseError(
            f"ComfyUI {method} {shown} answered {declared} bytes; refusing it", url=shown
        )
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise ComfyUIResponseError(
                f"ComfyUI {method} {shown} answered more than {limit} bytes; refusing it", url=shown
            )
    return body


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
