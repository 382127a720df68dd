"""``ComfyUIPromptTrigger``: wait for a prompt in the triggerer, through the server's shared poller.

The trigger only reads and feeds: statuses come from the shared poller
(:mod:`airflow_comfy.triggers.poller`), the rules that end the wait (deadline, lost and
unreachable graces) and the progress lines are the policy of :mod:`airflow_comfy.protocol.waiting`,
the same the blocking waiter and the sensor apply. The event is
:meth:`~airflow_comfy.protocol.waiting.WaitOutcome.to_payload` and is read back with
:meth:`~airflow_comfy.protocol.waiting.WaitOutcome.from_payload`.

Invariants:
- ``serialize()`` returns JSON-safe kwargs only, and the deadline is wall-clock (epoch seconds),
  so a trigger moved to another triggerer after a restart keeps the same deadline; kwargs of
  earlier versions still deserialize (new ones have defaults);
- exactly one event is yielded, always a dict with ``status`` in :data:`EVENT_STATUSES` and
  ``prompt_id``;
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
from airflow_comfy.hooks.async_client import AsyncComfyUIClient
from airflow_comfy.hooks.connection import ComfyUISettings, settings_from_connection
from airflow_comfy.protocol.waiting import Decision, PromptWait, Verdict, WaitOutcome, WaitRules
from airflow_comfy.triggers.poller import shared_poller

EVENT_STATUSES = ("success", "error", "interrupted", "lost", "timeout", "failed")


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
    :param log_interval: seconds between progress lines while nothing changes.
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
        log_interval: float = 30.0,
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
        self.log_interval = float(log_interval)

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
                "log_interval": self.log_interval,
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
            message = f"Cannot read connection {self.comfyui_conn_id!r}: {exc}"
            yield TriggerEvent(WaitOutcome(Verdict.FAILED, self.prompt_id, message=message).to_payload())
            return
        rules = WaitRules(None, self.lost_grace, self.unreachable_grace, self.log_interval)
        state = PromptWait(self.prompt_id, settings.base_url, self.end_time, rules)
        self.log.info(
            "Waiting for prompt %s on %s (a status read every %g s)",
            self.prompt_id,
            settings.base_url,
            self.poll_interval,
        )
        with shared_poller(settings).watch(self.prompt_id, self.poll_interval) as watch:
            while (outcome := self._act(state.tick(time.time()))) is None:
                try:
                    status = await watch.next(timeout=max(self.end_time - time.time(), 0.0))
                except ComfyUIError as exc:
                    decision = state.error(time.time(), exc)
                else:
                    decision = (
                        state.tick(time.time()) if status is None else state.status(time.time(), status)
                    )
                if (outcome := self._act(decision)) is not None:
                    break
        self.log.info(
            "Prompt %s: %s", self.prompt_id, outcome.status.state.value if outcome.status else outcome.message
        )
        yield TriggerEvent(outcome.to_payload())

    def _act(self, decision: Decision) -> WaitOutcome | None:
        """Log what the decision says; its outcome when the wait is over."""
        if decision.warning:
            self.log.warning("%s", decision.warning)
        if decision.log:
            self.log.info("Prompt %s: %s", self.prompt_id, decision.log)
        return decision.outcome

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
