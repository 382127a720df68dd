"""One prompt of one task instance, from attach-or-submit to the published outputs.

:class:`PromptRun` is shared by :class:`~airflow_comfy.operators.comfyui.ComfyUIPromptOperator`,
:class:`~airflow_comfy.sensors.comfyui.ComfyUIPromptSensor` and
:func:`~airflow_comfy.taskflow.run_workflow`; they only wire it to Airflow (deferral, poking, XCom
return values).

Invariants:
- a retried task never starts a second GPU job for the same work: the prompt id is derived from
  dag_id, run_id, task_id, map_index and the work as given (workflow, overrides, input files — not
  the server), and a prompt that is already queued, running or finished with success, on any server
  of the connection, is attached to instead of submitted again (on a retry, a server that cannot be
  asked stops the submission: :meth:`ComfyUIHook.locate` with ``strict``). A first try does not
  look (there is no earlier try), except for ``run_workflow``, which a task may call twice;
- a rejected or unreadable workflow fails the task at once, without using Airflow retries
  (:func:`fail_fast`);
- an outage before the submission is ridden out for ``unreachable_grace`` (``StartOutage``);
- a lost prompt is submitted again at most once, and only when ``resubmit_if_lost`` is set;
- stopping (kill, task timeout, wait timeout) cancels only this run's own prompt, never a global
  interrupt, and only when ``cancel_on_kill`` is set.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_comfy import xcoms
from airflow_comfy.exceptions import (
    ComfyUIConnectionError,
    ComfyUIError,
    ComfyUIPromptFailedError,
    ComfyUIPromptLostError,
    ComfyUITimeoutError,
    ComfyUIValidationError,
    ComfyUIWorkflowError,
)
from airflow_comfy.lineage import record_output_lineage
from airflow_comfy.outputs import collect_paths, output_records
from airflow_comfy.prepare import prepare_for
from airflow_comfy.protocol import urls
from airflow_comfy.protocol.ids import deterministic_prompt_id, new_client_id
from airflow_comfy.protocol.states import PromptState, PromptStatus
from airflow_comfy.protocol.waiting import StartOutage, Verdict, WaitOutcome
from airflow_comfy.workflows import (
    SHA256_XCOM_KEY,
    SavedWorkflow,
    resolve_source,
    saved_identity,
    saved_record,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_comfy.hooks.client import ComfyUIClient
    from airflow_comfy.hooks.comfyui import ComfyUIHook
    from airflow_comfy.hooks.websocket import ComfyUIWebSocket
    from airflow_comfy.triggers.comfyui import ComfyUIPromptTrigger


@contextmanager
def fail_fast() -> Iterator[None]:
    """Turn errors that cannot pass on retry into ``AirflowFailException`` (no retries used)."""
    try:
        yield
    except (ComfyUIValidationError, ComfyUIWorkflowError) as exc:
        raise AirflowFailException(str(exc)) from exc


@dataclass(frozen=True)
class RunOptions:
    """How to run and wait; the operator's parameters of the same names."""

    overrides: Mapping[str, Any] | None = None
    inputs: Mapping[str, str | os.PathLike[str]] | None = None
    input_subfolder: str = "airflow"
    validate: bool = True
    front: bool = False
    extra_data: Mapping[str, Any] | None = None
    output_dir: str | os.PathLike[str] | None = None
    output_kinds: tuple[str, ...] | None = None
    wait_mode: str = "websocket"
    timeout: float = 3600.0
    check_interval: float = 2.0
    lost_grace: float = 30.0
    unreachable_grace: float = 300.0
    resubmit_if_lost: bool = False
    cancel_on_kill: bool = True
    reattach: bool = True
    #: Look for the prompt on a first try too (``run_workflow``: a task may call it twice). An
    #: operator's first try has no earlier try to attach to, and saves the two requests of a look.
    reattach_first_try: bool = False
    prompt_id: str | None = None
    blocking: bool = True  # waits in this process (opens the WebSocket before submitting)


class PromptRun:
    """The prompt of one task instance (see the module docstring).

    :param workflow: the workflow as given (dict, JSON text, path); ``None`` to watch an existing
        prompt (``options.prompt_id``), as the sensor does.
    :param stop: set it to stop waiting (the task was killed); the prompt is then cancelled.
    """

    def __init__(
        self,
        hook: ComfyUIHook,
        context: Context,
        log: Any,
        options: RunOptions,
        workflow: Any = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.hook, self.context, self.log, self.options = hook, context, log, options
        self.stop_signal = stop or threading.Event()
        self.source: dict[str, Any] | None = None
        self.saved: SavedWorkflow | None = None  # a workflow saved on the server (comfyui://...)
        if workflow is not None:
            with fail_fast():  # a saved workflow is read from the default server, fresh every run
                where = urls.redact_url(hook.base_url)
                self.source, self.saved = resolve_source(workflow, hook.client(), where=where)
        self.prompt_id = options.prompt_id or task_prompt_id(context, self.work_identity())
        self.client: ComfyUIClient | None = None
        self._workflow: Mapping[str, Any] | None = None
        self._client_id: str | None = None
        self._socket: ComfyUIWebSocket | None = None
        self._waiting = False
        self._posted = False

    def work_identity(self) -> dict[str, Any]:
        """What the prompt id is derived from: the workflow as given, the overrides, the input files.

        Taken before conversion and uploads, so it is the same whichever server of a pool is used. A
        workflow saved on the server stands for itself by its path and content hash: a re-saved
        workflow is new work, a retry of the same version attaches.
        """
        inputs = {str(k): os.fspath(v) for k, v in (self.options.inputs or {}).items()}
        workflow = saved_identity(self.saved) if self.saved is not None else self.source
        return {"workflow": workflow, "overrides": dict(self.options.overrides or {}), "inputs": inputs}

    # --- starting -----------------------------------------------------------------------------------

    def start(self) -> PromptStatus | None:
        """Attach to this task's prompt, or submit it; push the prompt XComs. Returns the status
        when an earlier try's prompt already succeeded, else ``None``."""
        status = self._ride_out()
        xcoms.push_prompt_xcoms(self.context, self.base_url, self.prompt_id)
        if self.saved is not None:
            self.context["ti"].xcom_push(key=SHA256_XCOM_KEY, value=self.saved.sha256)
        return status

    def _ride_out(self) -> PromptStatus | None:
        """:meth:`_attach_or_submit`, again while the start's outage rule says so (``StartOutage``)."""
        outage = StartOutage(urls.redact_url(self.hook.base_url), self.options.unreachable_grace)
        while True:
            self._posted = False
            try:
                return self._attach_or_submit()
            except ComfyUIError as exc:
                decision = outage.failed(time.monotonic(), time.time(), exc, posted=self._posted)
                if decision.outcome is not None:
                    if decision.verdict is Verdict.FAILED:
                        raise
                    raise (decision.outcome.error() or exc) from None
                self.log.warning("%s", decision.warning)
                if self.stop_signal.wait(outage.pause(time.monotonic(), self.hook.settings.retry_max_wait)):
                    raise

    def _attach_or_submit(self) -> PromptStatus | None:
        status: PromptStatus | None = None
        retry = _is_retry(self.context)
        if self.options.reattach and (retry or self.options.reattach_first_try):
            client, status = self.hook.locate(self.prompt_id, strict=retry)
            if client is not None and status.state is not PromptState.NOT_FOUND:
                self.client = client
        known = status.state if status is not None else PromptState.NOT_FOUND
        if known is PromptState.SUCCESS:
            self.log.info("Prompt %s already succeeded (earlier try); collecting its outputs", self.prompt_id)
            return status
        if known.is_active:
            where = (self.prompt_id, self.base_url, known.value)
            self.log.info("Re-attaching to prompt %s on %s, %s since an earlier try", *where)
            return None
        self.submit()
        return None

    def attach(self, *, strict: bool = True) -> PromptStatus:
        """Find an existing prompt (the sensor's start); its status, ``NOT_FOUND`` when no server has it."""
        client, status = self.hook.locate(
            self.prompt_id, strict=strict, prefer=self.client and self.client.base_url
        )
        if client is not None:
            self.client = client
        return status

    def submit(self) -> None:
        """Choose the server, prepare the workflow there and submit it (WebSocket opened first)."""
        if self.source is None:
            raise ComfyUIWorkflowError(f"Prompt {self.prompt_id} has no workflow to submit")
        with fail_fast():
            client = self.hook.choose(self.source)
            self._workflow = prepare_for(
                client,
                self.source,
                self.options.overrides,
                validate=self.options.validate,
                log=self.log,
                inputs=self.options.inputs,
                input_subfolder=self.options.input_subfolder,
            )
        self.client = client
        self._client_id = new_client_id()
        if self.options.blocking and self.options.wait_mode == "websocket":
            try:  # open the socket before submitting so that no event of this prompt is missed
                self._socket = client.websocket(self._client_id).connect()
            except ComfyUIConnectionError as exc:
                self.log.warning("%s; will wait by polling", exc)
        self._posted = True  # from here on, the POST may have arrived (StartOutage's rule)
        try:
            with fail_fast():
                client.submit_prompt(
                    self._workflow,
                    client_id=self._client_id,
                    prompt_id=self.prompt_id,
                    front=self.options.front,
                    extra_data=self.options.extra_data,
                )
        except BaseException:
            self.close()
            raise

    @property
    def waiting(self) -> bool:
        """True while :meth:`wait` blocks on the prompt."""
        return self._waiting

    @property
    def base_url(self) -> str:
        return (self.client or self.hook.client()).base_url

    # --- waiting ------------------------------------------------------------------------------------

    def wait(self) -> PromptStatus:
        """Block until the prompt ends; a lost prompt is submitted once more if allowed."""
        self._waiting = True
        if self.stop_signal.is_set():  # stopped before the wait began
            self.cancel("the task was killed")
        try:
            try:
                return self._wait_once()
            except ComfyUIPromptLostError:
                if not self.options.resubmit_if_lost or self.stop_signal.is_set():
                    raise
                self.log.warning("Prompt %s was lost by the server; submitting it once more", self.prompt_id)
                self.submit()
                return self._wait_once()
        except ComfyUITimeoutError:
            self.cancel("the wait timed out")
            raise
        except (ComfyUIPromptFailedError, ComfyUIPromptLostError):
            raise  # it ended (or is gone): nothing to cancel
        except ComfyUIError:
            self.cancel("the wait failed")  # e.g. the server kept answering garbage: do not leave it running
            raise
        except BaseException:  # task timeout, SIGTERM, KeyboardInterrupt: do not leave the GPU busy
            self.cancel("the task stopped while waiting")
            raise
        finally:
            self._waiting = False
            self.close()

    def _wait_once(self) -> PromptStatus:
        assert self.client is not None
        socket, self._socket = self._socket, None
        workflow = self._workflow
        return self.client.wait_for_prompt(
            self.prompt_id,
            client_id=self._client_id,
            websocket=socket,
            mode=self.options.wait_mode if self._client_id else "polling",
            timeout=self.options.timeout,
            check_interval=self.options.check_interval,
            lost_grace=self.options.lost_grace,
            unreachable_grace=self.options.unreachable_grace,
            total_nodes=len(workflow) if workflow is not None else None,
            on_progress=lambda line: self.log.info("Prompt %s: %s", self.prompt_id, line),
            should_stop=self.stop_signal.is_set,
        )

    def trigger(self) -> ComfyUIPromptTrigger:
        """The trigger that waits for this prompt in the triggerer."""
        from airflow_comfy.triggers.comfyui import ComfyUIPromptTrigger

        self.close()
        return ComfyUIPromptTrigger(
            prompt_id=self.prompt_id,
            comfyui_conn_id=self.hook.comfyui_conn_id,
            end_time=time.time() + self.options.timeout,
            poll_interval=self.options.check_interval,
            lost_grace=self.options.lost_grace,
            unreachable_grace=self.options.unreachable_grace,
            cancel_on_kill=self.options.cancel_on_kill,
            server=self.base_url,
        )

    def complete(self, event: Any, *, resubmitted: bool = False) -> PromptStatus | None:
        """Read the trigger's event: the successful status, ``None`` when the prompt was lost and
        submitted once more (defer again), or raise its error (a passed deadline cancels the prompt)."""
        outcome = WaitOutcome.from_payload(event)
        if outcome.server in self.hook.servers:
            self.client = self.hook.client(outcome.server)  # downloads and cancels go where it ran
        if outcome.verdict is Verdict.TIMED_OUT:
            self.cancel("the wait timed out")
        if outcome.verdict is Verdict.LOST and self.options.resubmit_if_lost and not resubmitted:
            self._same_saved_version()
            self.log.warning("Prompt %s was lost by the server; submitting it once more", self.prompt_id)
            self.submit()
            return None
        return outcome.result()

    def _same_saved_version(self) -> None:
        """Before resubmitting after a deferral: the saved workflow must be the version first submitted."""
        if self.saved is None:
            return
        ti = self.context["ti"]
        first = ti.xcom_pull(task_ids=ti.task_id, key=SHA256_XCOM_KEY) if hasattr(ti, "xcom_pull") else None
        if first and first != self.saved.sha256:
            raise AirflowFailException(
                f"The workflow {self.saved.source} was saved again since prompt {self.prompt_id} was "
                "submitted (its content hash changed): not submitting another version under the same "
                "prompt id. Run the task again to run the new version."
            )

    # --- stopping -----------------------------------------------------------------------------------

    def kill(self, why: str = "the task was killed") -> None:
        """Stop waiting (from a signal handler or another thread) and cancel the prompt if it waits."""
        self.stop_signal.set()
        if self._waiting:
            self.cancel(why)

    def cancel(self, why: str) -> None:
        """Cancel this run's prompt (when ``cancel_on_kill``); a failed cancel is logged, not raised."""
        if not self.options.cancel_on_kill:
            return
        try:
            done = (self.client or self.hook.client()).cancel_prompt(self.prompt_id)
            self.log.warning("Prompt %s: %s because %s", self.prompt_id, done, why)
        except Exception as exc:  # a failed cancel must not hide the original error
            self.log.warning("Could not cancel prompt %s (%s): %s", self.prompt_id, why, exc)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    # --- finishing ----------------------------------------------------------------------------------

    def finish(self, status: PromptStatus) -> list[str]:
        """Publish a successful prompt: ``outputs``/``texts`` XComs, files, lineage, Asset events.

        Returns the output paths: downloaded copies under ``output_dir``, else server-side paths.
        """
        client = self.client or self.hook.client()
        records = output_records(status.outputs, client.base_url)
        xcoms.push_output_xcoms(self.context, records, status.texts)
        output_dir = self.options.output_dir
        paths = collect_paths(client, status.outputs, output_dir, kinds=self.options.output_kinds)
        where = f"written under {output_dir}" if output_dir else "on the ComfyUI server"
        self.log.info("Prompt %s succeeded with %d output file(s) %s", status.prompt_id, len(paths), where)
        for path in paths:
            self.log.info("  %s", path)
        record_output_lineage(self.hook, paths, records, downloaded=output_dir is not None)
        extra = xcoms.asset_event_extra(status.prompt_id, paths, records, client.base_url)
        if self.saved is not None:
            extra.update(saved_record(self.saved))
        for asset in xcoms.emit_asset_events(self.context, extra):
            self.log.info("Asset event for %s: prompt %s, %d file(s)", asset, status.prompt_id, len(paths))
        return paths


def task_prompt_id(context: Context, work: Mapping[str, Any]) -> str:
    """The prompt id of this task instance and work (the same on every try)."""
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    return deterministic_prompt_id(ti.dag_id, ti.run_id, ti.task_id, map_index, work)


def _is_retry(context: Context) -> bool:
    return int(getattr(context["ti"], "try_number", 1) or 1) > 1
