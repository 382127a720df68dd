"""Run a ComfyUI workflow from inside a TaskFlow ``@task``.

    from airflow.sdk import task
    from airflow_comfy.taskflow import run_workflow

    @task
    def render(prompt: str) -> list[str]:
        return run_workflow("workflows/txt2img.json", overrides={"Positive Prompt.text": prompt})

:func:`run_workflow` builds a :class:`~airflow_comfy.operators.comfyui.ComfyUIPromptOperator` from
its arguments and runs :meth:`~airflow_comfy.operators.comfyui.ComfyUIPromptOperator.run_prompt`
with the current task's context, so it behaves exactly like the operator: same preparation, same
deterministic prompt id (from the *calling* task instance and the workflow, so a retry of the
``@task`` re-attaches instead of starting a second GPU job), same XComs pushed on the calling task
(``prompt_id``, ``prompt_url``, ``comfyui_url``, ``outputs``), same Asset events for the calling
task's ``outlets`` and same cancellation when the task is stopped while waiting.

Invariant: no step of running a prompt is implemented here; it always waits in the worker (a
``@task`` cannot defer), so ``deferrable`` and ``wait_for_completion`` are not accepted.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["run_workflow"]

_NOT_ALLOWED = ("deferrable", "wait_for_completion", "task_id")


def run_workflow(
    workflow: Mapping[str, Any] | str | os.PathLike[str],
    *,
    comfyui_conn_id: str = "comfyui_default",
    overrides: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str | os.PathLike[str]] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    output_kinds: Iterable[str] | None = None,
    timeout: float = 3600.0,
    wait_mode: str = "websocket",
    check_interval: float = 2.0,
    validate: bool = True,
    context: Context | None = None,
    **options: Any,
) -> list[str]:
    """Submit ``workflow`` (or re-attach to this task's prompt), wait for it, return its output paths.

    Call it inside a running task (``@task``); the parameters are those of
    :class:`~airflow_comfy.operators.comfyui.ComfyUIPromptOperator` (``options`` takes the others:
    ``lost_grace``, ``resubmit_if_lost``, ``prompt_id``, ``reattach``, ``cancel_on_kill``,
    ``extra_data``, ``front``, ``input_subfolder``). Values are used as given: nothing is templated.

    :param context: the task context; by default ``airflow.sdk.get_current_context()``.
    :return: the server-side paths of the outputs, or their downloaded copies under ``output_dir``.
    """
    from airflow_comfy.operators.comfyui import ComfyUIPromptOperator

    refused = sorted(name for name in options if name in _NOT_ALLOWED)
    if refused:
        raise TypeError(f"run_workflow() does not accept {', '.join(refused)}: it always waits in the task")
    if context is None:
        from airflow.sdk import get_current_context

        context = get_current_context()
    operator = ComfyUIPromptOperator(
        task_id=f"{context['ti'].task_id}__comfyui",
        workflow=workflow,
        comfyui_conn_id=comfyui_conn_id,
        overrides=overrides,
        inputs=inputs,
        output_dir=output_dir,
        output_kinds=output_kinds,
        timeout=timeout,
        wait_mode=wait_mode,
        check_interval=check_interval,
        validate=validate,
        wait_for_completion=True,
        deferrable=False,
        **options,
    )
    # A kill signal reaches the calling task's on_kill, not this inner operator's: while the call
    # runs, the calling task's on_kill also kills every run_workflow call active on it (threads too).
    task = context.get("task")
    if task is None:
        return list(operator.run_prompt(context))
    _register(task, operator)
    try:
        return list(operator.run_prompt(context))
    finally:
        _unregister(task, operator)


_LOCK = threading.Lock()
_ACTIVE = "_airflow_comfy_active_calls"
_PREVIOUS = "_airflow_comfy_previous_on_kill"


def _register(task: Any, operator: Any) -> None:
    with _LOCK:
        active = task.__dict__.get(_ACTIVE)
        if active is None:
            active = task.__dict__[_ACTIVE] = []
            task.__dict__[_PREVIOUS] = task.__dict__.get("on_kill")  # an instance-level on_kill, if any
            outer_on_kill = task.on_kill

            def on_kill() -> None:
                with _LOCK:
                    calls = list(task.__dict__.get(_ACTIVE) or [])
                for call in calls:
                    call.on_kill()
                outer_on_kill()

            task.on_kill = on_kill
        active.append(operator)


def _unregister(task: Any, operator: Any) -> None:
    with _LOCK:
        active = task.__dict__.get(_ACTIVE) or []
        if operator in active:
            active.remove(operator)
        if not active:
            task.__dict__.pop(_ACTIVE, None)
            previous = task.__dict__.pop(_PREVIOUS, None)
            if previous is None:
                task.__dict__.pop("on_kill", None)
            else:
                task.on_kill = previous
