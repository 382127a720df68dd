"""``ComfyUIBatchOperator``: one workflow over many items in one task, resumable, with a manifest.

The operator only wires :class:`~airflow_comfy.batch.runner.BatchRun` to Airflow: blocking (runs
the batch in the worker) or deferrable (fills the servers' slots, then waits in the triggerer on
:class:`~airflow_comfy.triggers.batch.ComfyUIBatchTrigger` until a prompt ends, and comes back to
record it and fill the slot: the state between cycles is in the manifest and on the servers).
How items are read, scheduled, resumed and recorded is documented in :mod:`airflow_comfy.batch`.

Heavy modules are imported when the task runs, not when a DAG file is parsed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator
from airflow.sdk.configuration import conf

from airflow_comfy.templating import FailFastTemplates

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_comfy.batch.options import BatchOptions
    from airflow_comfy.batch.runner import BatchRun
    from airflow_comfy.hooks.comfyui import ComfyUIHook


class ComfyUIBatchOperator(FailFastTemplates, BaseOperator):
    """Run ``workflow`` once per item of ``items``; return the manifest's path and the counts.

    :param workflow: as :class:`~airflow_comfy.operators.comfyui.ComfyUIPromptOperator` takes it. Templated.
    :param items: a list of items (inline or an upstream XCom), or a ``.jsonl`` / ``.csv`` file, local or
        object storage; see :mod:`airflow_comfy.batch.items` for what an item holds. Templated.
    :param output_dir: where the manifest (``manifest.jsonl``) and the downloads (a folder per item)
        go: a local folder or an object-storage URI; give each run its own. Templated.
    :param key_field: the field naming each item (default ``key`` when present, else its position).
    :param fields: ``{"column": "override target"}``: which columns become which overrides.
    :param input_fields: ``{"column": "input target"}``: columns holding an input file per item.
    :param overrides: overrides for every item. Templated.
    :param inputs: input files for every item (uploaded once per server). Templated.
    :param max_in_flight: the most prompts of this batch queued or running on one server at a time.
    :param max_failed: how many items may fail (a count, or a fraction of all items below 1) before
        the task fails; more failures stop new submissions at once.
    :param resubmit_lost: submit a prompt a server lost (restart) once more, instead of failing it.
    :param download: download the outputs into ``output_dir`` (else record their server paths).
    :param output_kinds: record only these kinds (``images``, ``video``, ``audio``…).
    :param deferrable: free the worker slot while prompts run (default ``[operators] default_deferrable``).
    :param check_interval: seconds between status reads when no WebSocket message comes sooner.
    :param unreachable_grace: seconds a server may fail to answer before its waiting items move to
        others (and, when every server is gone that long, before the task fails); deferred, the
        longest the trigger waits before the worker looks again even if no prompt ended.
    :param progress_interval: seconds between progress lines.
    :param capability_routing: use only servers whose /object_info has every node type of the workflow.
    """

    template_fields: Sequence[str] = ("workflow", "items", "output_dir", "overrides", "inputs")
    template_fields_renderers: ClassVar[dict[str, str]] = {"workflow": "json", "overrides": "json"}
    ui_color = "#e8e0ff"

    def __init__(
        self,
        *,
        workflow: Mapping[str, Any] | str | os.PathLike[str],
        items: Any,
        output_dir: str | os.PathLike[str],
        comfyui_conn_id: str = "comfyui_default",
        key_field: str | None = None,
        fields: Mapping[str, str] | None = None,
        input_fields: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        inputs: Mapping[str, str] | None = None,
        input_subfolder: str = "airflow",
        validate: bool = True,
        download: bool = True,
        output_kinds: Iterable[str] | None = None,
        max_in_flight: int = 2,
        max_failed: int | float = 0,
        resubmit_lost: bool = False,
        cancel_on_kill: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        check_interval: float = 2.0,
        unreachable_grace: float = 300.0,
        progress_interval: float = 10.0,
        capability_routing: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.workflow, self.items, self.output_dir = workflow, items, output_dir
        self.comfyui_conn_id = comfyui_conn_id
        self.key_field, self.fields, self.input_fields = key_field, fields, input_fields
        self.overrides, self.inputs, self.input_subfolder = overrides, inputs, input_subfolder
        self.validate, self.download = validate, download
        self.output_kinds = list(output_kinds) if output_kinds else None
        self.max_in_flight, self.max_failed = int(max_in_flight), max_failed
        self.resubmit_lost, self.cancel_on_kill, self.deferrable = resubmit_lost, cancel_on_kill, deferrable
        self.check_interval, self.unreachable_grace = float(check_interval), float(unreachable_grace)
        self.progress_interval = float(progress_interval)
        self.capability_routing = capability_routing
        self._run: BatchRun | None = None
        self._stop: threading.Event | None = None  # made when first needed (operators are deep-copied)
        self.options()  # wrong values fail when the DAG is parsed, not when it runs

    @cached_property
    def hook(self) -> ComfyUIHook:
        from airflow_comfy.hooks.comfyui import ComfyUIHook

        return ComfyUIHook(self.comfyui_conn_id, capability_routing=self.capability_routing)

    def options(self) -> BatchOptions:
        from airflow_comfy.batch.options import make_options

        return make_options(
            self.items if not _is_template(self.items) else [],
            self.output_dir,
            key_field=self.key_field,
            fields=self.fields,
            input_fields=self.input_fields,
            output_kinds=self.output_kinds,
            overrides=self.overrides,
            inputs=self.inputs,
            input_subfolder=self.input_subfolder,
            validate=self.validate,
            download=self.download,
            max_in_flight=self.max_in_flight,
            max_failed=self.max_failed,
            resubmit_lost=self.resubmit_lost,
            cancel_on_kill=self.cancel_on_kill,
            check_interval=self.check_interval,
            unreachable_grace=self.unreachable_grace,
            progress_interval=self.progress_interval,
        )

    # --- the task ---------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        from airflow_comfy.run import fail_fast

        run = self._batch(context)
        if not self.deferrable:
            with fail_fast():  # a rejected workflow or a manifest of other work: retries cannot help
                return self._publish(context, run.run())
        return self._cycle(context, run, continuing=False)

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        """The trigger fired (a prompt ended, or it is time to look): record, refill, maybe defer again."""
        if not isinstance(event, Mapping) or event.get("status") not in ("changed", "wake"):
            from airflow.sdk.exceptions import AirflowException

            raise AirflowException(f"Unexpected event from the batch trigger: {event!r}")
        return self._cycle(context, self._batch(context), continuing=True)

    def _cycle(self, context: Context, run: BatchRun, *, continuing: bool) -> Any:
        from airflow_comfy.run import fail_fast
        from airflow_comfy.triggers.batch import ComfyUIBatchTrigger

        try:
            with fail_fast():
                run.start(continuing=continuing)
            waiting = run.advance()
        except BaseException:
            run.kill("the task stopped")
            run.close()
            raise
        if waiting:
            run.close()  # the journal and manifest are complete on their storage before deferring
            trigger = ComfyUIBatchTrigger(
                self.comfyui_conn_id,
                waiting,
                wake_after=self.unreachable_grace,
                poll_interval=self.check_interval,
                cancel_on_kill=self.cancel_on_kill,
            )
            self.defer(trigger=trigger, method_name="execute_complete")
        return self._publish(context, run.finish())

    def _publish(self, context: Context, summary: Any) -> Any:
        from airflow_comfy.batch.task import publish

        return publish(context, summary, self.log)

    def _batch(self, context: Context, stop: threading.Event | None = None) -> BatchRun:
        from airflow_comfy.batch.task import batch_for_task

        self._run = batch_for_task(
            self.hook, context, self.log, self.options(), self.workflow, stop=stop or self._stop_signal()
        )
        return self._run

    def on_kill(self) -> None:
        """Stop, and cancel this batch's prompts in flight (also when the kill comes before they start)."""
        if self._run is not None:
            self._run.kill("the task was killed")
        else:
            self._stop_signal().set()

    def _stop_signal(self) -> threading.Event:
        if self._stop is None:
            self._stop = threading.Event()
        return self._stop


def _is_template(value: Any) -> bool:
    """An XComArg or a Jinja string not rendered yet: checked when the task runs instead."""
    return hasattr(value, "resolve") or (isinstance(value, str) and "{{" in value)
