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
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["run_batch", "run_workflow"]

_NOT_ALLOWED = ("deferrable", "wait_for_completion", "task_id")
_OPTIONS = (
    "lost_grace", "unreachable_grace", "resubmit_if_lost", "prompt_id", "reattach", "cancel_on_kill",
    "extra_data", "front", "input_subfolder",
)  # fmt: skip


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
    capability_routing: bool = False,
    context: Context | None = None,
    stop: threading.Event | None = None,
    **options: Any,
) -> list[str]:
    """Submit ``workflow`` (or re-attach to this task's prompt), wait for it, return its output paths.

    Call it inside a running task (``@task``); the parameters are those of
    :class:`~airflow_comfy.operators.comfyui.ComfyUIPromptOperator` (``options`` takes the others:
    ``lost_grace``, ``unreachable_grace``, ``resubmit_if_lost``, ``prompt_id``, ``reattach``,
    ``cancel_on_kill``, ``extra_data``, ``front``, ``input_subfolder``). Values are used as given:
    nothing is templated.

    :param context: the task context; by default ``airflow.sdk.get_current_context()``.
    :param stop: set it to stop waiting (the prompt is cancelled unless ``cancel_on_kill=False``).
    :return: the server-side paths of the outputs, or their downloaded copies under ``output_dir``.
    """
    refused = sorted(name for name in options if name in _NOT_ALLOWED)
    if refused:
        raise TypeError(f"run_workflow() does not accept {', '.join(refused)}: it always waits in the task")
    unknown = sorted(name for name in options if name not in _OPTIONS)
    if unknown:
        raise TypeError(f"run_workflow() got unexpected keyword argument(s) {', '.join(unknown)}")
    if wait_mode not in ("websocket", "polling"):
        raise ValueError(f"wait_mode must be 'websocket' or 'polling', got {wait_mode!r}")
    if context is None:
        from airflow.sdk import get_current_context

        context = get_current_context()
    from airflow_comfy.hooks.comfyui import ComfyUIHook
    from airflow_comfy.run import PromptRun, RunOptions

    run_options = RunOptions(
        overrides=overrides,
        inputs=inputs,
        output_dir=output_dir,
        output_kinds=tuple(output_kinds) if output_kinds else None,
        timeout=float(timeout),
        wait_mode=wait_mode,
        check_interval=float(check_interval),
        validate=validate,
        reattach_first_try=True,
        **options,
    )
    hook = ComfyUIHook(comfyui_conn_id, capability_routing=capability_routing)
    log = getattr(context.get("task"), "log", None) or _log()
    run = PromptRun(hook, context, log, run_options, workflow, stop=stop)
    with _stopped_by_kill(context.get("task"), run.kill):
        return list(run.finish(run.start() or run.wait()))


def run_batch(
    workflow: Mapping[str, Any] | str | os.PathLike[str],
    items: Any,
    output_dir: str | os.PathLike[str],
    *,
    comfyui_conn_id: str = "comfyui_default",
    capability_routing: bool = False,
    context: Context | None = None,
    stop: threading.Event | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run ``workflow`` once per item of ``items`` from inside a ``@task``; returns the manifest path
    and the counts, exactly as :class:`~airflow_comfy.operators.batch.ComfyUIBatchOperator` does
    (``options`` are its other parameters except ``deferrable``). Resumable like the operator: the
    item prompt ids come from the *calling* task instance.

    :param stop: set it to stop the batch (its prompts in flight are cancelled unless
        ``cancel_on_kill=False``).
    """
    if "deferrable" in options:
        raise TypeError("run_batch() does not accept deferrable: it always runs in the task")
    if context is None:
        from airflow.sdk import get_current_context

        context = get_current_context()
    from airflow_comfy.batch.options import make_options
    from airflow_comfy.batch.task import batch_for_task, publish
    from airflow_comfy.hooks.comfyui import ComfyUIHook
    from airflow_comfy.run import fail_fast

    batch_options = make_options(items, output_dir, **options)
    hook = ComfyUIHook(comfyui_conn_id, capability_routing=capability_routing)
    log = getattr(context.get("task"), "log", None) or _log()
    run = batch_for_task(hook, context, log, batch_options, workflow, stop=stop)
    with _stopped_by_kill(context.get("task"), lambda: run.kill("the task was killed")), fail_fast():
        return publish(context, run.run(), log)


def _log() -> Any:
    import logging

    return logging.getLogger(__name__)


_LOCK = threading.Lock()
_ACTIVE: dict[int, tuple[Any, list[Any], Any]] = {}  # id(task) -> (task, kill callbacks, its own on_kill)


@contextmanager
def _stopped_by_kill(task: Any, kill: Any) -> Iterator[None]:
    """While the block runs, the task's ``on_kill`` also calls ``kill`` (then restored)."""
    if task is None:
        yield
        return
    with _LOCK:
        entry = _ACTIVE.get(id(task))
        if entry is None:
            entry = _ACTIVE[id(task)] = (task, [], vars(task).get("on_kill"))
            own_on_kill = task.on_kill

            def on_kill() -> None:
                with _LOCK:
                    kills = list(entry[1])
                for call in kills:
                    call()
                own_on_kill()

            task.on_kill = on_kill
        entry[1].append(kill)
    try:
        yield
    finally:
        with _LOCK:
            entry[1].remove(kill)
            if not entry[1]:
                _ACTIVE.pop(id(task), None)
                if entry[2] is None:
                    vars(task).pop("on_kill", None)
                else:
                    task.on_kill = entry[2]
