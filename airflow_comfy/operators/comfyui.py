"""Operators that run ComfyUI workflows from a DAG.

- :class:`ComfyUIPromptOperator` submits a workflow, waits (WebSocket, polling, or deferred to the
  triggerer) and returns the output file paths; XComs ``prompt_id``, ``prompt_url`` and
  ``comfyui_url`` are pushed *before* waiting, ``outputs`` (one record per file) after.
- :class:`ComfyUICancelPromptOperator` cancels one prompt; :class:`ComfyUIFreeOperator` calls /free;
  :class:`ComfyUIUploadOperator` uploads input files.

The prompt operator only wires :class:`~airflow_comfy.run.PromptRun` (which keeps the invariants:
no second GPU job on retry, fail fast on rejected workflows, cancel only its own prompt) to
Airflow's deferral. It shows two extra links (:mod:`airflow_comfy.links`). Declared ``outlets``
(Assets) get an event on success whose ``extra`` carries the prompt id and output paths.

Heavy modules (requests, websocket-client, the workflow converter) are imported when a task runs,
not when a DAG file is parsed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator
from airflow.sdk.configuration import conf

from airflow_comfy.links import ComfyUIOutputLink, ComfyUIWebLink
from airflow_comfy.templating import FailFastTemplates

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_comfy.hooks.comfyui import ComfyUIHook
    from airflow_comfy.run import PromptRun

WorkflowSource = Mapping[str, Any] | str | os.PathLike[str]


class ComfyUIPromptOperator(FailFastTemplates, BaseOperator):
    """Run one ComfyUI workflow and return its output files.

    :param workflow: the workflow in API format (dict, JSON text or a ``.json`` path), or in the web
        UI's saved format (converted with the server's /object_info). Templated.
    :param comfyui_conn_id: the ``comfyui`` connection.
    :param overrides: input values to set before submitting, e.g. ``{"3": {"seed": 42}}`` or
        ``{"Positive Prompt.text": "a cat"}``. Templated.
    :param wait_for_completion: False submits and returns the prompt id at once (pair it with
        :class:`~airflow_comfy.sensors.comfyui.ComfyUIPromptSensor`).
    :param deferrable: wait in the triggerer instead of holding a worker slot
        (default: ``[operators] default_deferrable``).
    :param wait_mode: ``websocket`` (progress events, polling as fallback) or ``polling``.
    :param timeout: seconds to wait for the prompt to end.
    :param check_interval: seconds between status reads while polling (and deferred).
    :param lost_grace: seconds a prompt may be in neither history nor queue before it counts as lost.
    :param unreachable_grace: seconds of failed status reads (server down, garbage answers) tolerated
        while waiting before the task fails (and cancels its prompt).
    :param resubmit_if_lost: submit once more if the server lost the prompt (restart, cleared history).
    :param output_dir: download every output there (a local folder or an object-storage URI) and
        return those paths; without it the server-side paths ``<type>/<subfolder>/<filename>``.
    :param output_kinds: return only these kinds (``images``, ``video``, ``audio``, ``gifs``...).
    :param prompt_id: use this prompt id instead of the derived one. Templated.
    :param reattach: on a retry, look for this task's prompt on the servers before submitting, and
        attach to it (see :mod:`airflow_comfy.run`).
    :param cancel_on_kill: cancel the prompt when the task is killed or times out.
    :param validate: check the workflow against the server's /object_info before submitting.
    :param extra_data: passed through as ``extra_data`` of POST /prompt. Templated.
    :param front: put the prompt at the head of the queue.
    :param inputs: files to upload and wire into nodes before submitting:
        ``{"Load Image": "/data/in/cat.png", "12.image": "s3://bucket/dog.png"}`` (a node id, title or
        unique class, optionally ``.<input>``; local paths or object-storage URIs). Templated.
    :param input_subfolder: the subfolder of ComfyUI's input folder the files are uploaded into.
    :param capability_routing: on a connection with several servers (``extra.hosts``), submit only
        to a server whose /object_info has every node type of the workflow.
    """

    template_fields: Sequence[str] = (
        "workflow",
        "overrides",
        "prompt_id",
        "output_dir",
        "extra_data",
        "inputs",
        "input_subfolder",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "workflow": "json",
        "overrides": "json",
        "extra_data": "json",
    }
    ui_color = "#e8e0ff"
    operator_extra_links = (ComfyUIWebLink(), ComfyUIOutputLink())

    def __init__(
        self,
        *,
        workflow: WorkflowSource,
        comfyui_conn_id: str = "comfyui_default",
        overrides: Mapping[str, Any] | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        wait_mode: str = "websocket",
        timeout: float = 3600.0,
        check_interval: float = 2.0,
        lost_grace: float = 30.0,
        unreachable_grace: float = 300.0,
        resubmit_if_lost: bool = False,
        output_dir: str | os.PathLike[str] | None = None,
        output_kinds: Iterable[str] | None = None,
        prompt_id: str | None = None,
        reattach: bool = True,
        cancel_on_kill: bool = True,
        validate: bool = True,
        extra_data: Mapping[str, Any] | None = None,
        front: bool = False,
        inputs: Mapping[str, str | os.PathLike[str]] | None = None,
        input_subfolder: str = "airflow",
        capability_routing: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if wait_mode not in ("websocket", "polling"):
            raise ValueError(f"wait_mode must be 'websocket' or 'polling', got {wait_mode!r}")
        self.workflow = workflow
        self.comfyui_conn_id = comfyui_conn_id
        self.overrides = overrides
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.wait_mode = wait_mode
        self.timeout = float(timeout)
        self.check_interval = float(check_interval)
        self.lost_grace = float(lost_grace)
        self.unreachable_grace = float(unreachable_grace)
        self.resubmit_if_lost = resubmit_if_lost
        self.output_dir = output_dir
        self.output_kinds = list(output_kinds) if output_kinds else None
        self.prompt_id = prompt_id
        self.reattach = reattach
        self.cancel_on_kill = cancel_on_kill
        self.validate = validate
        self.extra_data = extra_data
        self.front = front
        self.inputs = inputs
        self.input_subfolder = input_subfolder
        self.capability_routing = capability_routing
        self._run: PromptRun | None = None
        self._stop: threading.Event | None = None  # made when first needed (operators are deep-copied)

    @cached_property
    def hook(self) -> ComfyUIHook:
        """The connection's hook (its clients are immutable: one hook serves every run)."""
        from airflow_comfy.hooks.comfyui import ComfyUIHook

        return ComfyUIHook(self.comfyui_conn_id, capability_routing=self.capability_routing)

    # --- the task ---------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        run = self._start_run(context)
        done = run.start()
        if not self.wait_for_completion:
            run.close()
            return run.prompt_id
        if done is None and self.deferrable:
            self.defer(trigger=run.trigger(), method_name="execute_complete")
        return run.finish(done or run.wait())

    def execute_complete(self, context: Context, event: dict[str, Any], resubmitted: bool = False) -> Any:
        """Resume after the trigger fired: read its event, then publish the outputs as ``execute`` does.

        A passed deadline cancels the prompt (``cancel_on_kill``); a lost prompt is submitted once
        more when ``resubmit_if_lost`` is set, and the task defers again.
        """
        given = event.get("prompt_id") if isinstance(event, Mapping) else None
        run = self._start_run(context, prompt_id=given if isinstance(given, str) else None)
        status = run.complete(event, resubmitted=resubmitted)
        if status is None:
            self.defer(trigger=run.trigger(), method_name="execute_complete", kwargs={"resubmitted": True})
        return run.finish(status)

    def on_kill(self) -> None:
        """Stop waiting and cancel this task's prompt (also when the kill comes before the wait)."""
        if self._run is not None:
            self._run.kill()
        else:
            self._stop_signal().set()  # the run made next sees it and cancels as its prompt starts

    def _stop_signal(self) -> threading.Event:
        if self._stop is None:
            self._stop = threading.Event()
        return self._stop

    def run_prompt(self, context: Context, stop: threading.Event | None = None) -> list[str]:
        """The whole task in this process (never defers): start, wait, publish. Used by ``run_workflow``."""
        run = self._start_run(context, stop=stop)
        return run.finish(run.start() or run.wait())

    def _start_run(
        self, context: Context, *, prompt_id: str | None = None, stop: threading.Event | None = None
    ) -> PromptRun:
        from airflow_comfy.run import PromptRun, RunOptions

        options = RunOptions(
            overrides=self.overrides,
            inputs=self.inputs,
            input_subfolder=self.input_subfolder,
            validate=self.validate,
            front=self.front,
            extra_data=self.extra_data,
            output_dir=self.output_dir,
            output_kinds=tuple(self.output_kinds) if self.output_kinds else None,
            wait_mode=self.wait_mode,
            timeout=self.timeout,
            check_interval=self.check_interval,
            lost_grace=self.lost_grace,
            unreachable_grace=self.unreachable_grace,
            resubmit_if_lost=self.resubmit_if_lost,
            cancel_on_kill=self.cancel_on_kill,
            reattach=self.reattach,
            prompt_id=prompt_id or self.prompt_id,
            blocking=self.wait_for_completion and not self.deferrable,
        )
        self._run = PromptRun(
            self.hook, context, self.log, options, self.workflow, stop=stop or self._stop_signal()
        )
        return self._run


class ComfyUICancelPromptOperator(FailFastTemplates, BaseOperator):
    """Cancel one prompt: removed from the queue if pending, interrupted if running, else nothing.

    :param prompt_id: the prompt. Templated.
    :param server: on a connection with several servers, the one the prompt was submitted to
        (e.g. the submitting task's XCom ``comfyui_url``); without it every server is searched. Templated.
    """

    template_fields: Sequence[str] = ("prompt_id", "server")

    def __init__(
        self,
        *,
        prompt_id: str,
        comfyui_conn_id: str = "comfyui_default",
        server: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prompt_id = prompt_id
        self.comfyui_conn_id = comfyui_conn_id
        self.server = server

    def execute(self, context: Context) -> str:
        from airflow_comfy.hooks.comfyui import ComfyUIHook

        hook = ComfyUIHook(self.comfyui_conn_id, server=self.server or None)
        client, _status = hook.locate(self.prompt_id, strict=True)
        if client is None:
            self.log.info("Prompt %s: nothing to do (it is on no server of the connection)", self.prompt_id)
            return "nothing to do (it is on no server of the connection)"
        done = client.cancel_prompt(self.prompt_id)
        self.log.info("Prompt %s on %s: %s", self.prompt_id, client.base_url, done)
        return done


class ComfyUIFreeOperator(FailFastTemplates, BaseOperator):
    """POST /free: unload models and/or free memory (drops ComfyUI's executor cache).

    On a connection with several servers it frees every server, or only ``server`` when given.
    """

    template_fields: Sequence[str] = ("server",)

    def __init__(
        self,
        *,
        comfyui_conn_id: str = "comfyui_default",
        unload_models: bool = True,
        free_memory: bool = True,
        server: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.comfyui_conn_id = comfyui_conn_id
        self.unload_models = unload_models
        self.free_memory = free_memory
        self.server = server

    def execute(self, context: Context) -> None:
        from airflow_comfy.exceptions import ComfyUIError
        from airflow_comfy.hooks.comfyui import ComfyUIHook

        hook = ComfyUIHook(self.comfyui_conn_id, server=self.server or None)
        servers = [hook.base_url] if self.server else list(hook.servers)
        failures = []
        for server in servers:  # every server is tried, even after one failed
            try:
                hook.client(server).free(unload_models=self.unload_models, free_memory=self.free_memory)
                self.log.info("Freed %s", server)
            except ComfyUIError as exc:
                failures.append(f"{server}: {exc}")
        if failures:
            raise ComfyUIError(f"/free failed on {len(failures)} server(s): {'; '.join(failures)}")


class ComfyUIUploadOperator(FailFastTemplates, BaseOperator):
    """Upload files to ComfyUI's input folder; returns the names to use in LoadImage-like nodes.

    :param files: local paths or object-storage URIs (``s3://…``). Templated.
    :param subfolder: the subfolder of ComfyUI's input folder. Templated.
    :param overwrite: replace a file of the same name instead of letting ComfyUI rename the upload.
    :param server: required on a connection with several servers: the server to upload to (names
        differ between servers; the prompt operator's ``inputs`` uploads to the server it chose). Templated.

    Returns ``["<subfolder>/<name>", …]`` in the order of ``files``: the names the server chose
    (identical bytes reuse the existing file; different bytes under a taken name get ``name (1).ext``).
    """

    template_fields: Sequence[str] = ("files", "subfolder", "server")

    def __init__(
        self,
        *,
        files: Sequence[str | os.PathLike[str]],
        comfyui_conn_id: str = "comfyui_default",
        subfolder: str = "airflow",
        overwrite: bool = False,
        server: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.server = server
        self.files = files
        self.comfyui_conn_id = comfyui_conn_id
        self.subfolder = subfolder
        self.overwrite = overwrite

    def execute(self, context: Context) -> list[str]:
        from airflow_comfy.hooks.comfyui import ComfyUIHook
        from airflow_comfy.run import fail_fast
        from airflow_comfy.uploads import upload_file, uploaded_reference

        hook = ComfyUIHook(self.comfyui_conn_id, server=self.server or None)
        if hook.settings.is_pool and not self.server:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"Connection {self.comfyui_conn_id!r} names several servers: set server= to the one to "
                "upload to, or pass the files as the prompt operator's inputs= (uploaded where it submits)"
            )
        sources = [self.files] if isinstance(self.files, str | os.PathLike) else list(self.files)
        names = []
        with fail_fast():
            for source in sources:
                answer = upload_file(
                    hook.client(), source, subfolder=self.subfolder, overwrite=self.overwrite
                )
                self.log.info("Uploaded %s as %s", source, uploaded_reference(answer))
                names.append(uploaded_reference(answer))
        return names
