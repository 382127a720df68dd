"""The async ComfyUI client used in the triggerer (``httpx``).

It implements only what waiting and cancelling need — /history, /queue, the prompt status,
cancel — with the same rules as the sync hook: the status comes from
:mod:`airflow_comfy.protocol.states`, errors from :mod:`airflow_comfy.protocol.errors`, retries only
for what can succeed on retry, with exponential backoff and a bound.

Invariant: one ``httpx.AsyncClient`` (one connection pool) per event loop and server settings,
shared by every trigger waiting on that server, so a triggerer with a thousand deferred tasks
holds a handful of connections, not a thousand. Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import httpx

from airflow_comfy.exceptions import ComfyUIError, ComfyUIHTTPError, ComfyUIResponseError
from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.protocol import errors, urls
from airflow_comfy.protocol.states import PromptState, PromptStatus, resolve_status, status_from_history

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
            response = await client.request(method, url, json=json_body)
        except httpx.TimeoutException:
            raise errors.timeout_error(method, shown, self.settings.read_timeout) from None
        except httpx.HTTPError as exc:
            raise errors.connection_error(method, shown, f"{type(exc).__name__}: {exc}"[:200]) from None
        if response.status_code >= 400:
            raise errors.http_status_error(method, shown, response.status_code, response.text[:300])
        if not response.content.strip():
            return None
        try:
            return json.loads(response.content)
        except ValueError:
            raise errors.not_json_error(
                method, shown, response.headers.get("Content-Type", ""), response.text[:300]
            ) from None

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
