"""Operators that run ComfyUI workflows from a DAG.

- :class:`ComfyUIPromptOperator` submits a workflow, waits (WebSocket, polling, or deferred to the
  triggerer) and returns the output file paths; XComs ``prompt_id``, ``prompt_url`` and
  ``comfyui_url`` are pushed *before* waiting, ``outputs`` (one record per file) after.
- :class:`ComfyUICancelPromptOperator` cancels one prompt; :class:`ComfyUIFreeOperator` calls /free.

The prompt operator shows two extra links (:mod:`airflow_comfy.links`): the ComfyUI web UI and its
first output. Declared ``outlets`` (Assets) get an event on success whose ``extra`` carries the
prompt id and output paths. :meth:`ComfyUIPromptOperator.run_prompt` is the whole task without
Airflow's deferral, shared with :func:`airflow_comfy.taskflow.run_workflow`.

Invariants:
- a retried task never starts a second GPU job for the same work: the prompt id is derived from
  dag_id, run_id, task_id, map_index and the work as given (workflow, overrides, input files — not
  the server), and a prompt that is already queued, running or finished with success, on any server
  of the connection, is re-attached to instead of submitted again;
- a rejected workflow fails the task at once, without using Airflow retries;
- killing or timing out the task cancels only its own prompt, never a global interrupt.

Heavy modules (requests, websocket-client, the workflow converter) are imported when a task runs,
not when a DAG file is parsed.
"""

from __future__ import annotations

import os
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
    from airflow_comfy.hooks.websocket import ComfyUIWebSocket
    from airflow_comfy.protocol.states import PromptStatus

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
    :param resubmit_if_lost: submit once more if the server lost the prompt (restart, cleared history).
    :param output_dir: download every output there (a local folder or an object-storage URI) and
        return those paths; without it the server-side paths ``<type>/<subfolder>/<filename>``.
    :param output_kinds: return only these kinds (``images``, ``video``, ``audio``, ``gifs``...).
    :param prompt_id: use this prompt id instead of the derived one. Templated.
    :param reattach: look for this task's prompt on the server before submitting (see invariants).
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
        self._active_prompt: str | None = None
        self._kill_requested = False  # set by on_kill: the wait stops and nothing is resubmitted

    @cached_property
    def hook(self) -> ComfyUIHook:
        from airflow_comfy.hooks.comfyui import ComfyUIHook

        return ComfyUIHook(self.comfyui_conn_id, capability_routing=self.capability_routing)

    # --- the task ---------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        return self.run_prompt(context)

    def run_prompt(self, context: Context) -> Any:
        """Prepare, derive the prompt id, re-attach or submit, wait, and collect the outputs.

        The body of :meth:`execute`, callable from inside another task (see
        :func:`airflow_comfy.taskflow.run_workflow`); it defers only when ``deferrable`` is set.
        """
        from airflow_comfy.protocol.states import PromptState
        from airflow_comfy.tasks import push_prompt_xcoms, task_prompt_id

        self.__dict__.pop("hook", None)  # a fresh hook per run: not pinned to a server of an earlier run
        hook = self.hook
        source = self._load()
        prompt_id = self.prompt_id or task_prompt_id(context, self._work_identity(source))
        # On a pool of servers this also finds (and pins) the server an earlier try submitted to.
        retry = int(getattr(context["ti"], "try_number", 1) or 1) > 1
        status = hook.locate_prompt(prompt_id, strict=retry) if self.reattach else None
        client_id: str | None = None
        socket: ComfyUIWebSocket | None = None
        workflow: Mapping[str, Any] = source
        if status is not None and status.state is PromptState.SUCCESS:
            self.log.info(
                "Prompt %s already finished with success (earlier try); collecting its outputs", prompt_id
            )
            push_prompt_xcoms(context, hook, prompt_id)
            return self._finish(context, status)
        if status is not None and status.state.is_active:
            self.log.info(
                "Re-attaching to prompt %s on %s, %s since an earlier try",
                prompt_id,
                hook.base_url,
                status.state.value,
            )
        else:
            workflow = self._prepare(hook, source)
            client_id, socket = self._submit(hook, workflow, prompt_id)
        push_prompt_xcoms(context, hook, prompt_id)
        if not self.wait_for_completion:
            if socket is not None:
                socket.close()
            return prompt_id
        if self.deferrable:
            if socket is not None:
                socket.close()
            self._defer(prompt_id)
        status = self._wait(hook, workflow, prompt_id, client_id, socket)
        return self._finish(context, status)

    def execute_complete(self, context: Context, event: dict[str, Any], resubmitted: bool = False) -> Any:
        """Resume after the trigger fired: validate its event, then collect outputs as in ``execute``.

        As in ``execute``: a deadline that passed cancels the prompt (``cancel_on_kill``), and a lost
        prompt is submitted once more when ``resubmit_if_lost`` is set (then the task defers again).
        """
        from airflow_comfy.exceptions import ComfyUIPromptLostError, ComfyUITimeoutError
        from airflow_comfy.outputs import status_from_event
        from airflow_comfy.tasks import fail_fast

        server = event.get("base_url") if isinstance(event, dict) else None
        if server and server in self.hook.servers:
            self.hook.pin(server)  # downloads and cancels go where the prompt ran
        try:
            with fail_fast():
                status = status_from_event(event)
        except ComfyUITimeoutError:
            if self.cancel_on_kill:
                self._cancel(str(event["prompt_id"]), "the wait timed out")
            raise
        except ComfyUIPromptLostError as lost:
            if not self.resubmit_if_lost or resubmitted:
                raise
            self.log.warning("Prompt %s was lost by the server; submitting it once more", lost.prompt_id)
            workflow = self._prepare(self.hook, self._load())
            self._submit(self.hook, workflow, lost.prompt_id)
            self._defer(lost.prompt_id, resubmitted=True)
        return self._finish(context, status)

    def on_kill(self) -> None:
        self._kill_requested = True  # first, so that a wait starting now sees it (see _wait)
        prompt_id = self._active_prompt
        if prompt_id and self.cancel_on_kill:
            self._cancel(prompt_id, "the task was killed")

    # --- steps --------------------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        from airflow_comfy.tasks import fail_fast
        from airflow_comfy.workflows import load_workflow

        with fail_fast():
            return load_workflow(self.workflow)

    def _work_identity(self, source: Mapping[str, Any]) -> dict[str, Any]:
        """What the prompt id is derived from: the workflow as given, the overrides, the input files.

        Taken before conversion and uploads, so it is the same whichever server of a pool is used.
        """
        inputs = {str(k): os.fspath(v) for k, v in (self.inputs or {}).items()}
        return {"workflow": source, "overrides": self.overrides or {}, "inputs": inputs}

    def _prepare(self, hook: ComfyUIHook, source: Mapping[str, Any]) -> dict[str, Any]:
        """Choose the server (pools), then convert, override, upload inputs and validate there."""
        from airflow_comfy.tasks import fail_fast, prepare_workflow_for

        with fail_fast():
            hook.choose_server(source)
            return prepare_workflow_for(
                hook,
                source,
                self.overrides,
                validate=self.validate,
                log=self.log,
                inputs=self.inputs,
                input_subfolder=self.input_subfolder,
            )

    def _submit(
        self, hook: ComfyUIHook, workflow: Mapping[str, Any], prompt_id: str
    ) -> tuple[str, ComfyUIWebSocket | None]:
        from airflow_comfy.exceptions import ComfyUIConnectionError
        from airflow_comfy.protocol.ids import new_client_id
        from airflow_comfy.tasks import fail_fast

        client_id = new_client_id()
        socket = None
        if self.wait_for_completion and not self.deferrable and self.wait_mode == "websocket":
            # Open the socket before submitting so that no event of this prompt is missed.
            try:
                socket = hook.websocket(client_id).connect()
            except ComfyUIConnectionError as exc:
                self.log.warning("%s; will wait by polling", exc)
        try:
            with fail_fast():
                hook.submit_prompt(
                    workflow,
                    client_id=client_id,
                    prompt_id=prompt_id,
                    front=self.front,
                    extra_data=self.extra_data,
                )
        except BaseException:
            if socket is not None:
                socket.close()
            raise
        return client_id, socket

    def _wait(
        self,
        hook: ComfyUIHook,
        workflow: Mapping[str, Any],
        prompt_id: str,
        client_id: str | None,
        socket: ComfyUIWebSocket | None,
    ) -> PromptStatus:
        from airflow_comfy.exceptions import ComfyUIError, ComfyUIPromptLostError, ComfyUITimeoutError

        self._active_prompt = prompt_id
        if self._kill_requested and self.cancel_on_kill:  # killed before the wait began
            self._cancel(prompt_id, "the task was killed")
        try:
            try:
                return self._wait_once(hook, workflow, prompt_id, client_id, socket)
            except ComfyUIPromptLostError:
                if not self.resubmit_if_lost or self._kill_requested:
                    raise
                self.log.warning("Prompt %s was lost by the server; submitting it once more", prompt_id)
                workflow = self._prepare(hook, self._load())  # a re-attached prompt was never prepared here
                client_id, socket = self._submit(hook, workflow, prompt_id)
                return self._wait_once(hook, workflow, prompt_id, client_id, socket)
        except ComfyUITimeoutError:
            if self.cancel_on_kill:
                self._cancel(prompt_id, "the wait timed out")
            raise
        except ComfyUIError:
            raise
        except BaseException:  # task timeout, SIGTERM, KeyboardInterrupt: do not leave the GPU busy
            if self.cancel_on_kill:
                self._cancel(prompt_id, "the task stopped while waiting")
            raise
        finally:
            self._active_prompt = None

    def _wait_once(
        self,
        hook: ComfyUIHook,
        workflow: Mapping[str, Any],
        prompt_id: str,
        client_id: str | None,
        socket: ComfyUIWebSocket | None,
    ) -> PromptStatus:
        return hook.wait_for_prompt(
            prompt_id,
            client_id=client_id,
            websocket=socket,
            mode=self.wait_mode if client_id else "polling",
            timeout=self.timeout,
            check_interval=self.check_interval,
            lost_grace=self.lost_grace,
            total_nodes=len(workflow) if "nodes" not in workflow else None,  # API format only
            on_progress=lambda line: self.log.info("Prompt %s: %s", prompt_id, line),
            should_stop=lambda: self._kill_requested,
        )

    def _defer(self, prompt_id: str, *, resubmitted: bool = False) -> None:
        import time

        from airflow_comfy.triggers.comfyui import ComfyUIPromptTrigger

        self.defer(
            trigger=ComfyUIPromptTrigger(
                prompt_id=prompt_id,
                comfyui_conn_id=self.comfyui_conn_id,
                end_time=time.time() + self.timeout,
                poll_interval=self.check_interval,
                lost_grace=self.lost_grace,
                cancel_on_kill=self.cancel_on_kill,
                server=self.hook.base_url,
            ),
            method_name="execute_complete",
            kwargs={"resubmitted": True} if resubmitted else None,
        )

    def _finish(self, context: Context, status: PromptStatus) -> list[str]:
        from airflow_comfy.tasks import finish_prompt

        return finish_prompt(context, self.hook, status, self.output_dir, self.output_kinds, self.log)

    def _cancel(self, prompt_id: str, why: str) -> None:
        try:
            done = self.hook.cancel_prompt(prompt_id)
            self.log.warning("Prompt %s: %s because %s", prompt_id, done, why)
        except Exception as exc:  # a failed cancel must not hide the original error
            self.log.warning("Could not cancel prompt %s (%s): %s", prompt_id, why, exc)


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
        from airflow_comfy.protocol.states import PromptState

        hook = ComfyUIHook(self.comfyui_conn_id, server=self.server or None)
        status = hook.locate_prompt(self.prompt_id, strict=True)  # on a pool: pins the server that has it
        if not hook.is_pinned and status.state is PromptState.NOT_FOUND:
            done = "nothing to do (it is on no server of the connection)"
        else:
            done = hook.cancel_prompt(self.prompt_id)
        self.log.info("Prompt %s on %s: %s", self.prompt_id, hook.base_url, done)
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
        servers = [hook.base_url] if self.server or not hook.settings.is_pool else list(hook.servers)
        failures = []
        for server in servers:  # every server is tried, even after one failed
            try:
                hook.pin(server)
                hook.free(unload_models=self.unload_models, free_memory=self.free_memory)
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
        from airflow_comfy.inputs import upload_file, uploaded_reference
        from airflow_comfy.tasks import fail_fast

        hook = ComfyUIHook(self.comfyui_conn_id, server=self.server or None)
        if not hook.is_pinned:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"Connection {self.comfyui_conn_id!r} names several servers: set server= to the one to "
                "upload to, or pass the files as the prompt operator's inputs= (uploaded where it submits)"
            )
        sources = [self.files] if isinstance(self.files, str | os.PathLike) else list(self.files)
        names = []
        with fail_fast():
            for source in sources:
                answer = upload_file(hook, source, subfolder=self.subfolder, overwrite=self.overwrite)
                self.log.info("Uploaded %s as %s", source, uploaded_reference(answer))
                names.append(uploaded_reference(answer))
        return names
