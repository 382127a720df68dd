"""``ComfyUIPromptSensor``: wait for a prompt submitted elsewhere (e.g. ``wait_for_completion=False``).

Succeeds when the prompt finished with success (returning its output paths, like the operator, and
pushing the same ``outputs`` XCom); fails at once — without retries, since the outcome cannot change
— when it ended in an error, was interrupted, or is lost. Works in ``poke``, ``reschedule`` and
deferrable mode (the same trigger as the operator).

Each poke is read → feed → act: one status read, fed to the waiting policy of
:mod:`airflow_comfy.protocol.waiting` (the same rules as the operator and the trigger); nothing
sleeps inside a poke. In ``reschedule`` mode every poke is a new process, so the lost clock starts
at the sensor's first poke: a prompt found in neither queue nor history counts as lost once
``lost_grace`` has passed since then.

Like the operator it shows the "ComfyUI" and "ComfyUI output" extra links (it pushes the
``comfyui_url`` XCom when it starts) and emits an event for each Asset in ``outlets`` on success.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.configuration import conf

from airflow_comfy.exceptions import ComfyUIError
from airflow_comfy.links import ComfyUIOutputLink, ComfyUIWebLink
from airflow_comfy.templating import FailFastTemplates

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_comfy.hooks.comfyui import ComfyUIHook
    from airflow_comfy.protocol.states import PromptStatus
    from airflow_comfy.protocol.waiting import PromptWait
    from airflow_comfy.run import PromptRun

#: What the lost message of a sensor advises: the sensor did not submit the prompt.
LOST_HINT = "run the task that submitted it again (a sensor cannot resubmit a prompt)."


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
        self._wait: PromptWait | None = None  # the policy's state across pokes of one process

    @cached_property
    def hook(self) -> ComfyUIHook:
        from airflow_comfy.hooks.comfyui import ComfyUIHook

        return ComfyUIHook(self.comfyui_conn_id, server=self.server or None)

    def execute(self, context: Context) -> Any:
        from airflow_comfy.protocol import urls

        run = self._prompt_run(context)
        status = run.attach(strict=True)  # on a pool: finds the server that has it
        context["ti"].xcom_push(key="comfyui_url", value=urls.redact_url(run.base_url))
        if not self.deferrable:
            return super().execute(context)
        done = self._judge(context, run, status)
        if isinstance(done, PokeReturnValue) and done.is_done:
            return done.xcom_value
        if run.client is None:
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
                server=run.base_url,
            ),
            method_name="execute_complete",
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        run = self._prompt_run(context)
        # A server that cannot be asked is an error (retryable), never "lost": the prompt may be there.
        return self._judge(context, run, run.attach(strict=True))

    def _judge(self, context: Context, run: PromptRun, status: PromptStatus) -> PokeReturnValue | bool:
        """Feed one status to the waiting policy and act on its decision."""
        from airflow.sdk.exceptions import AirflowFailException

        from airflow_comfy.protocol.states import PromptState
        from airflow_comfy.protocol.waiting import PromptWait, Verdict, WaitRules

        now = time.time()
        if self._wait is None:
            rules = WaitRules(None, self.lost_grace, float("inf"), log_interval=0.0)
            self._wait = PromptWait(self.prompt_id, run.base_url, float("inf"), rules, lost_hint=LOST_HINT)
            if status.state is PromptState.NOT_FOUND:
                self._wait.not_found_since = self._first_poke(context, now)
        decision = self._wait.status(now, status)
        if decision.warning:
            self.log.warning("%s", decision.warning)
        if decision.outcome is None:
            self.log.info("Prompt %s is %s", self.prompt_id, status.state.value)
            return False
        if decision.verdict is not Verdict.DONE:
            raise AirflowFailException(decision.outcome.message)
        try:
            finished = decision.outcome.result()
        except ComfyUIError as failure:
            raise AirflowFailException(str(failure)) from failure
        return PokeReturnValue(is_done=True, xcom_value=run.finish(finished))

    def _first_poke(self, context: Context, now: float) -> float:
        """When this sensor began: now, or in reschedule mode the first poke's time."""
        if self.mode != "reschedule":
            return now
        first = context["ti"].get_first_reschedule_date(context)
        return first.timestamp() if first is not None else now

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[str]:
        from airflow.sdk.exceptions import AirflowFailException

        run = self._prompt_run(context)
        try:
            status = run.complete(event)
        except ComfyUIError as exc:
            raise AirflowFailException(str(exc)) from exc
        assert status is not None  # the sensor never resubmits
        return run.finish(status)

    def _prompt_run(self, context: Context) -> PromptRun:
        from airflow_comfy.run import PromptRun, RunOptions

        options = RunOptions(
            prompt_id=self.prompt_id,
            output_dir=self.output_dir,
            output_kinds=tuple(self.output_kinds) if self.output_kinds else None,
            lost_grace=self.lost_grace,
            cancel_on_kill=False,
        )
        return PromptRun(self.hook, context, self.log, options)
