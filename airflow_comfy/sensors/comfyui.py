"""``ComfyUIPromptSensor``: wait for a prompt submitted elsewhere (e.g. ``wait_for_completion=False``).

Succeeds when the prompt finished with success (returning its output paths, like the operator, and
pushing the same ``outputs`` XCom); fails at once — without retries, since the outcome cannot change
— when it ended in an error, was interrupted, or is lost. Works in ``poke``, ``reschedule`` and
deferrable mode (the same trigger as the operator).

Like the operator it shows the "ComfyUI" and "ComfyUI output" extra links (it pushes the
``comfyui_url`` XCom when it starts) and emits an event for each Asset in ``outlets`` on success.

Invariant: a prompt is declared lost only after it was found in neither history nor queue for
``lost_grace`` seconds (measured across pokes of one sensor process; in reschedule mode, within one
poke), so a slow queue write never fails the sensor.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.configuration import conf

from airflow_comfy.links import ComfyUIOutputLink, ComfyUIWebLink
from airflow_comfy.templating import FailFastTemplates

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_comfy.hooks.comfyui import ComfyUIHook


class ComfyUIPromptSensor(FailFastTemplates, BaseSensorOperator):
    """Wait until ``prompt_id`` ends on the ComfyUI server of ``comfyui_conn_id``.

    :param prompt_id: the prompt to watch. Templated (e.g. ``{{ ti.xcom_pull('submit') }}``).
    :param comfyui_conn_id: the ``comfyui`` connection.
    :param output_dir: download the outputs there and return those paths (see the operator).
    :param output_kinds: return only these kinds of outputs.
    :param lost_grace: seconds a prompt may be in neither history nor queue before it is lost.
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    :param server: on a connection with several servers (``extra.hosts``), the one the prompt was
        submitted to — e.g. ``"{{ ti.xcom_pull(task_ids='submit', key='comfyui_url') }}"``. Templated.
        Without it the sensor looks for the prompt on every server of the pool.
    """

    template_fields: Sequence[str] = ("prompt_id", "output_dir", "server")
    operator_extra_links = (ComfyUIWebLink(), ComfyUIOutputLink())

    def __init__(
        self,
        *,
        prompt_id: str,
        comfyui_conn_id: str = "comfyui_default",
        output_dir: str | os.PathLike[str] | None = None,
        output_kinds: Iterable[str] | None = None,
        lost_grace: float = 30.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        server: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prompt_id = prompt_id
        self.comfyui_conn_id = comfyui_conn_id
        self.output_dir = output_dir
        self.output_kinds = list(output_kinds) if output_kinds else None
        self.lost_grace = float(lost_grace)
        self.deferrable = deferrable
        self.server = server
        self._not_found_since: float | None = None

    @cached_property
    def hook(self) -> ComfyUIHook:
        from airflow_comfy.hooks.comfyui import ComfyUIHook

        return ComfyUIHook(self.comfyui_conn_id, server=self.server or None)

    def execute(self, context: Context) -> Any:
        from airflow_comfy.protocol import urls

        self.hook.locate_prompt(self.prompt_id, strict=True)  # on a pool: pins the server that has it
        context["ti"].xcom_push(key="comfyui_url", value=urls.redact_url(self.hook.base_url))
        if not self.deferrable:
            return super().execute(context)
        done = self.poke(context)
        if isinstance(done, PokeReturnValue) and done.is_done:
            return done.xcom_value
        if not self.hook.is_pinned:
            # The trigger watches one server: on a pool, without knowing which, keep poking here.
            self.log.warning(
                "Prompt %s is on no server of the pool yet; waiting by poking (set server= to defer)",
                self.prompt_id,
            )
            return super().execute(context)
        from airflow_comfy.triggers.comfyui import ComfyUIPromptTrigger

        self.defer(
            trigger=ComfyUIPromptTrigger(
                prompt_id=self.prompt_id,
                comfyui_conn_id=self.comfyui_conn_id,
                end_time=time.time() + self.timeout,
                poll_interval=self.poke_interval,
                lost_grace=self.lost_grace,
                cancel_on_kill=False,
                server=self.hook.base_url,
            ),
            method_name="execute_complete",
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        from airflow.sdk.exceptions import AirflowFailException

        from airflow_comfy.protocol import errors
        from airflow_comfy.protocol.states import PromptState
        from airflow_comfy.tasks import finish_prompt

        # On a pool: pins the server that has it; a server that cannot be asked is an error (retryable),
        # never "lost" — the prompt may be running there.
        status = self.hook.locate_prompt(self.prompt_id, strict=True)
        if status.state is PromptState.NOT_FOUND:
            now = time.monotonic()
            self._not_found_since = self._not_found_since or now
            if self.mode == "reschedule":  # each poke is a new process: spend the grace inside it
                deadline = now + self.lost_grace
                while status.state is PromptState.NOT_FOUND and time.monotonic() < deadline:
                    time.sleep(min(2.0, max(deadline - time.monotonic(), 0.0)))
                    status = self.hook.locate_prompt(self.prompt_id, strict=True)
            elif now - self._not_found_since < self.lost_grace:
                self.log.warning("Prompt %s is in neither history nor queue (yet)", self.prompt_id)
                return False
            if status.state is PromptState.NOT_FOUND:
                lost = errors.prompt_lost_error(self.prompt_id, self.hook.base_url)
                raise AirflowFailException(str(lost)) from lost
        self._not_found_since = None
        if not status.is_terminal:
            self.log.info("Prompt %s is %s", self.prompt_id, status.state.value)
            return False
        failure = errors.error_for_status(status)
        if failure is not None:
            raise AirflowFailException(str(failure)) from failure
        paths = finish_prompt(context, self.hook, status, self.output_dir, self.output_kinds, self.log)
        return PokeReturnValue(is_done=True, xcom_value=paths)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[str]:
        from airflow.sdk.exceptions import AirflowFailException

        from airflow_comfy.exceptions import ComfyUIError
        from airflow_comfy.outputs import status_from_event
        from airflow_comfy.tasks import finish_prompt

        server = event.get("base_url") if isinstance(event, dict) else None
        if server and server in self.hook.servers:
            self.hook.pin(server)  # downloads go to the server the prompt ran on
        try:
            status = status_from_event(event)
        except ComfyUIError as exc:
            raise AirflowFailException(str(exc)) from exc
        return finish_prompt(context, self.hook, status, self.output_dir, self.output_kinds, self.log)
