"""The trigger a deferred batch waits on: until one of its prompts in flight ends.

A deferred :class:`~airflow_comfy.operators.batch.ComfyUIBatchOperator` frees its worker slot while
its prompts run; this trigger fires when any of them is no longer queued or running (so the worker
records it and fills the freed slot), or after ``wake_after`` seconds in any case (so the worker
looks at servers that went away and logs progress). It watches through the shared poller of
:mod:`airflow_comfy.triggers.poller` (one ``/queue`` read per server and round, woken by the
server's WebSocket), like every other wait in the triggerer.

Invariant: the trigger's kwargs (stored by Airflow) hold only the prompts in flight — at most
servers x ``max_in_flight`` ids — never the items or their results, which live in the manifest;
the event carries ids only, and the worker re-reads every status itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow.sdk import BaseHook
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_comfy.exceptions import ComfyUIError
from airflow_comfy.hooks.async_client import AsyncComfyUIClient
from airflow_comfy.hooks.connection import ComfyUISettings, settings_from_connection
from airflow_comfy.triggers.poller import PromptWatch, shared_poller


class ComfyUIBatchTrigger(BaseTrigger):
    """Fires when one of ``prompts`` ends, or after ``wake_after`` seconds.

    :param comfyui_conn_id: the batch's connection.
    :param prompts: the prompts in flight, by server base URL (each one of the connection's).
    :param wake_after: seconds after which it fires even if nothing ended.
    :param poll_interval: seconds between status reads of each prompt (the WebSocket wakes sooner).
    :param cancel_on_kill: cancel these prompts when a user kills the deferred task.
    """

    def __init__(
        self,
        comfyui_conn_id: str,
        prompts: Mapping[str, Sequence[str]],
        wake_after: float = 60.0,
        poll_interval: float = 2.0,
        cancel_on_kill: bool = True,
    ) -> None:
        super().__init__()
        self.comfyui_conn_id = comfyui_conn_id
        self.prompts = {str(server): [str(p) for p in ids] for server, ids in prompts.items()}
        self.wake_after = float(wake_after)
        self.poll_interval = float(poll_interval)
        self.cancel_on_kill = bool(cancel_on_kill)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "comfyui_conn_id": self.comfyui_conn_id,
                "prompts": self.prompts,
                "wake_after": self.wake_after,
                "poll_interval": self.poll_interval,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    async def _settings(self) -> ComfyUISettings:
        return settings_from_connection(await BaseHook.aget_connection(self.comfyui_conn_id))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        count = sum(len(ids) for ids in self.prompts.values())
        try:
            settings = await self._settings()
        except Exception as exc:  # the worker reports it better: wake it
            self.log.warning("Cannot read connection %r: %s", self.comfyui_conn_id, exc)
            yield TriggerEvent({"status": "wake", "ended": []})
            return
        self.log.info("Waiting for one of %d prompt(s) of the batch to end", count)
        deadline = time.monotonic() + self.wake_after
        with contextlib.ExitStack() as stack:
            watches = [
                stack.enter_context(
                    shared_poller(settings.for_server(server)).watch(prompt_id, self.poll_interval)
                )
                for server, ids in self.prompts.items()
                for prompt_id in ids
            ]
            tasks = [asyncio.ensure_future(_until_ended(watch, deadline)) for watch in watches]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        ended = [
            t.result()
            for t in tasks
            if t.done() and not t.cancelled() and t.exception() is None and t.result()
        ]
        status = "changed" if ended else "wake"
        self.log.info("Batch: %s", f"{len(ended)} prompt(s) ended" if ended else "waking the worker to look")
        yield TriggerEvent({"status": status, "ended": ended})

    async def on_kill(self) -> None:
        """A user killed the deferred task: cancel only this batch's prompts in flight."""
        if not self.cancel_on_kill:
            return
        try:
            settings = await self._settings()
        except Exception as exc:
            self.log.warning("Could not cancel the batch's prompts: %s", exc)
            return
        for server, ids in self.prompts.items():
            client = AsyncComfyUIClient(settings.for_server(server))
            for prompt_id in ids:
                try:
                    self.log.info("Prompt %s: %s", prompt_id, await client.cancel_prompt(prompt_id))
                except Exception as exc:  # never let a failed cancel hide the kill
                    self.log.warning("Could not cancel prompt %s: %s", prompt_id, exc)


async def _until_ended(watch: PromptWatch, deadline: float) -> str | None:
    """The prompt id once its status is not queued or running; ``None`` when the deadline passes."""
    while (left := deadline - time.monotonic()) > 0:
        try:
            status = await watch.next(timeout=left)
        except ComfyUIError:
            continue  # transient: the worker judges servers that stay away
        if status is not None and not status.state.is_active:
            return watch.prompt_id
    return None
