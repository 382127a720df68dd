"""The async client of one ComfyUI server (``httpx``), used in the triggerer.

It sends the same :class:`~airflow_comfy.protocol.flows.Call` requests as the sync transport, with
the same retry policy (:mod:`airflow_comfy.hooks.retry`, through ``AsyncRetrying``), the same body
bound and decoding (:mod:`airflow_comfy.protocol.answers`) and the same flows (status read, cancel),
so a prompt's status or cancel means the same thing in a worker and in the triggerer.

Invariants: one ``httpx.AsyncClient`` (one connection pool) per event loop and server settings, so a
triggerer with a thousand deferred tasks holds a handful of connections; a client is never used
from another loop; nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

import httpx
from tenacity import AsyncRetrying

from airflow_comfy.exceptions import ComfyUIError
from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.hooks.retry import retry_kwargs
from airflow_comfy.protocol import errors, flows, urls
from airflow_comfy.protocol.answers import MAX_JSON_BYTES, BoundedBody, decode_json, expect_object
from airflow_comfy.protocol.flows import Answer, Call, Fanout, Flow, Note, Pause
from airflow_comfy.protocol.states import PromptStatus

log = logging.getLogger(__name__)
T = TypeVar("T")

# key -> (the loop the client belongs to, the client). The loop is kept referenced so its id cannot be
# reused by a new loop while the entry exists (a client must never be used from another loop).
_ClientKey = tuple[int, str, tuple[tuple[str, str], ...], str]
_CLIENTS: dict[_ClientKey, tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]] = {}
_POOL = httpx.Limits(max_connections=32, max_keepalive_connections=16)
FANOUT_CONCURRENCY = 16  # requests of one Fanout step in flight at once


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

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    async def run(self, flow: Flow[T]) -> T:
        """Drive a flow of :mod:`airflow_comfy.protocol.flows` to its result."""
        reply: Any = None
        failure: ComfyUIError | None = None
        while True:
            try:
                step = flow.throw(failure) if failure is not None else flow.send(reply)
            except StopIteration as stop:
                return stop.value
            reply, failure = None, None
            if isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, Fanout):
                reply = await self._fanout(step.calls)
            elif isinstance(step, Note):
                log.log(logging.WARNING if step.level == "warning" else logging.INFO, "%s", step.message)
            else:
                try:
                    reply = await self.call(step)
                except ComfyUIError as exc:
                    failure = exc

    async def _fanout(self, calls: tuple[Call, ...]) -> list[Answer | ComfyUIError]:
        limit = asyncio.Semaphore(FANOUT_CONCURRENCY)

        async def one(call: Call) -> Answer | ComfyUIError:
            async with limit:
                try:
                    return await self.call(call)
                except ComfyUIError as exc:
                    return exc

        return list(await asyncio.gather(*(one(call) for call in calls)))

    async def call(self, call: Call) -> Answer:
        """Send one :class:`Call`, retrying transient failures as the one policy says."""
        shown = urls.redact_url(urls.endpoint(self.settings.base_url, call.path))
        policy = retry_kwargs(
            self.settings,
            f"{call.method} {shown}",
            retries=None if call.retry else 0,
            resend_safe_only=call.resend_safe_only,
        )
        async for attempt in AsyncRetrying(**policy):
            with attempt:
                return await self._send(call, shown)
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True

    async def _send(self, call: Call, shown: str) -> Answer:
        url = urls.endpoint(self.settings.base_url, call.path)
        client = _shared_client(self.settings)
        try:
            async with client.stream(
                call.method, url, params=call.params, json=call.json, headers=dict(call.headers)
            ) as response:
                body = BoundedBody(MAX_JSON_BYTES, call.method, shown, response.headers.get("Content-Length"))
                if call.expect != "none" or response.status_code >= 400:
                    async for chunk in response.aiter_bytes():
                        body.add(chunk)
        except httpx.TimeoutException as exc:
            failure: ComfyUIError = errors.timeout_error(call.method, shown, self.settings.read_timeout)
            failure.never_sent = isinstance(exc, httpx.ConnectTimeout)
            raise failure from None
        except httpx.HTTPError as exc:
            failure = errors.connection_error(call.method, shown, f"{type(exc).__name__}: {exc}"[:200])
            failure.never_sent = isinstance(exc, httpx.ConnectError)
            raise failure from None
        status = response.status_code
        if status >= 400 and status not in call.allow_status:
            excerpt = self.settings.auth_headers.scrub(bytes(body.data[:812]).decode("utf-8", "replace"))[
                :300
            ]
            refused = errors.http_status_error(call.method, shown, status, excerpt)
            refused.never_sent = status in (429, 502, 503)
            raise refused
        if call.expect == "none":
            return Answer(status, None)
        decoded = decode_json(
            body.data,
            method=call.method,
            shown_url=shown,
            status=status,
            content_type=response.headers.get("Content-Type", ""),
            scrub=self.settings.auth_headers.scrub,
        )
        if call.expect == "object" and status < 400:
            decoded = expect_object(decoded, method=call.method, shown_url=shown)
        return Answer(status, decoded)

    async def get_object(self, path: str) -> dict[str, Any]:
        """GET ``path``, whose answer must be a JSON object."""
        return (await self.call(Call("GET", path, headers=flows.FRESH))).body

    async def get_prompt_status(self, prompt_id: str) -> PromptStatus:
        """See :func:`airflow_comfy.protocol.flows.read_status`."""
        return await self.run(flows.read_status(prompt_id))

    async def cancel_prompt(self, prompt_id: str) -> str:
        """Stop exactly this prompt (see :func:`airflow_comfy.protocol.flows.cancel_prompt`)."""
        jobs_api = await self.run(flows.probe_jobs_api())
        return await self.run(flows.cancel_prompt(prompt_id, jobs_api=jobs_api))
