"""``ComfyUIPromptTrigger``: wait for a prompt in the triggerer, through the server's shared poller.

Same rules as the sync waiter (:mod:`airflow_comfy.hooks.waiting`): a terminal history entry ends
the wait; a prompt in the queue is pending or running; a prompt in neither for ``lost_grace``
seconds is lost; transient HTTP failures are tolerated for ``unreachable_grace`` seconds.

The status reads come from :class:`~airflow_comfy.hooks.comfyui_async.SharedPoller`: every trigger
of one server in one triggerer registers its prompt there, and each round reads /queue once for all
of them plus /history/<id> for the prompts that left the queue. So a thousand deferred tasks cost
about one request per check interval, plus one per prompt when it ends.

Invariants:
- ``serialize()`` returns JSON-safe kwargs only, and the deadline is wall-clock (epoch seconds),
  so a trigger moved to another triggerer after a restart keeps the same deadline;
- exactly one event is yielded, always a dict with ``status`` in :data:`EVENT_STATUSES` and
  ``prompt_id`` (see :func:`airflow_comfy.outputs.status_from_event` for how it is read);
- the prompt is checked at least every ``poll_interval`` seconds and at most about as often; it is
  unregistered from the poller whenever ``run`` ends (event, cancellation, error); no busy loop.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.sdk import BaseHook
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_comfy.exceptions import ComfyUIError
from airflow_comfy.hooks.comfyui_async import AsyncComfyUIClient, PromptWatch, shared_poller
from airflow_comfy.hooks.connection import ComfyUISettings, settings_from_connection
from airflow_comfy.protocol import errors
from airflow_comfy.protocol.states import PromptState, PromptStatus

EVENT_STATUSES = ("success", "error", "interrupted", "lost", "timeout", "failed")


def status_event(status: PromptStatus, base_url: str) -> dict[str, Any]:
    """The JSON-safe event for a terminal status."""
    return {
        "status": status.state.value,
        "prompt_id": status.prompt_id,
        "base_url": base_url,
        "outputs": [ref.to_dict() for ref in status.outputs],
        "texts": dict(status.texts),
        "failure": dict(status.failure) if status.failure else None,
    }


class ComfyUIPromptTrigger(BaseTrigger):
    """Fires once when ``prompt_id`` ends (or is lost, or the deadline passes).

    :param prompt_id: the prompt to wait for.
    :param comfyui_conn_id: the connection the prompt was submitted through.
    :param end_time: wall-clock deadline (epoch seconds).
    :param poll_interval: seconds between status reads.
    :param lost_grace: seconds a prompt may be in neither history nor queue before it is lost.
    :param unreachable_grace: seconds of transient HTTP failures tolerated before giving up.
    :param cancel_on_kill: cancel the prompt when a user kills the deferred task (Airflow >= 3.3).
    :param server: the base URL of the server the prompt was submitted to, for a connection with
        several servers (``extra.hosts``); it must be one of them. Default: the connection's first.
    """

    def __init__(
        self,
        prompt_id: str,
        comfyui_conn_id: str,
        end_time: float,
        poll_interval: float = 2.0,
        lost_grace: float = 30.0,
        unreachable_grace: float = 300.0,
        cancel_on_kill: bool = True,
        server: str | None = None,
    ) -> None:
        super().__init__()
        self.server = server
        self.prompt_id = prompt_id
        self.comfyui_conn_id = comfyui_conn_id
        self.end_time = float(end_time)
        self.poll_interval = float(poll_interval)
        self.lost_grace = float(lost_grace)
        self.unreachable_grace = float(unreachable_grace)
        self.cancel_on_kill = bool(cancel_on_kill)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "prompt_id": self.prompt_id,
                "comfyui_conn_id": self.comfyui_conn_id,
                "end_time": self.end_time,
                "poll_interval": self.poll_interval,
                "lost_grace": self.lost_grace,
                "unreachable_grace": self.unreachable_grace,
                "cancel_on_kill": self.cancel_on_kill,
                "server": self.server,
            },
        )

    async def _settings(self) -> ComfyUISettings:
        conn = await BaseHook.aget_connection(self.comfyui_conn_id)
        settings = settings_from_connection(conn)
        return settings.for_server(self.server) if self.server else settings

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            settings = await self._settings()
        except Exception as exc:  # a broken connection must end the wait with a clear message
            yield TriggerEvent(
                self._event("failed", f"Cannot read connection {self.comfyui_conn_id!r}: {exc}")
            )
            return
        with shared_poller(settings).watch(self.prompt_id, self.poll_interval) as watch:
            event = await self._wait(watch, settings.base_url)
        yield TriggerEvent(event)

    async def _wait(self, watch: PromptWatch, base_url: str) -> dict[str, Any]:
        """The event that ends the wait: the trigger's rules applied to each status the poller reads."""
        not_found_since: float | None = None
        unreachable_since: float | None = None
        while True:
            now = time.time()
            if now >= self.end_time:
                message = str(errors.wait_timeout_error(self.prompt_id, base_url, 0)).replace(
                    " within 0 s", " before the task's deadline"
                )
                return self._event("timeout", message, base_url)
            try:
                status = await watch.next(timeout=self.end_time - now)
            except ComfyUIError as exc:
                now = time.time()
                unreachable_since = unreachable_since or now
                if not errors.is_retryable(exc) or now - unreachable_since > self.unreachable_grace:
                    return self._event("failed", str(exc), base_url)
                self.log.warning(
                    "Could not read the status of prompt %s (will retry): %s", self.prompt_id, exc
                )
                continue
            if status is None:  # the deadline passed first
                continue
            now = time.time()
            unreachable_since = None
            if status.is_terminal:
                return status_event(status, base_url)
            if status.state is PromptState.NOT_FOUND:
                not_found_since = not_found_since or now
                if now - not_found_since >= self.lost_grace:
                    lost = errors.prompt_lost_error(self.prompt_id, base_url)
                    return self._event("lost", str(lost), base_url)
            else:
                not_found_since = None

    async def on_kill(self) -> None:
        """A user killed the deferred task: cancel only this prompt."""
        if not self.cancel_on_kill:
            return
        try:
            client = AsyncComfyUIClient(await self._settings())
            done = await client.cancel_prompt(self.prompt_id)
            self.log.info("Prompt %s: %s", self.prompt_id, done)
        except Exception as exc:  # never let a failed cancel hide the kill
            self.log.warning("Could not cancel prompt %s: %s", self.prompt_id, exc)

    def _event(self, status: str, message: str, base_url: str = "") -> dict[str, Any]:
        return {"status": status, "prompt_id": self.prompt_id, "base_url": base_url, "message": message}
