"""``ComfyUIHook``: one Airflow connection, ComfyUI's whole HTTP and WebSocket API.

One method per endpoint (submit, history, queue, interrupt, free, view/download, upload,
object_info, system_stats, features, /ws) plus the composite operations operators need:
the status of a prompt, cancelling exactly one prompt, and waiting for a prompt
(:mod:`airflow_comfy.hooks.waiting`). A connection may name several servers (``extra.hosts``):
the hook then picks the least loaded one on submit (:mod:`airflow_comfy.hooks.pool`) and stays
*pinned* to it.

Invariants:
- every submission carries a ``client_id`` and a ``prompt_id`` (generated when not given), so the
  WebSocket of that client receives the prompt's events and a retried submission can be detected;
- a submission is never sent twice for one call: before a retry the hook checks whether the first
  attempt reached the server (the prompt id is then in the queue or the history), and gives up
  rather than resend when it cannot tell;
- once pinned, every call of the hook goes to that one server, never to another of the pool;
- cancelling touches only the given prompt (``/api/jobs/{id}/cancel`` where the server has it, else
  queue delete while pending and ``/interrupt`` with ``prompt_id`` while running) — never a global
  interrupt.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import requests
from airflow.sdk import BaseHook

from airflow_comfy.exceptions import (
    ComfyUIError,
    ComfyUIHTTPError,
    ComfyUIResponseError,
)
from airflow_comfy.hooks.connection import ComfyUISettings, settings_from_connection
from airflow_comfy.hooks.transport import Transport
from airflow_comfy.hooks.websocket import ComfyUIWebSocket
from airflow_comfy.protocol import errors, urls
from airflow_comfy.protocol.ids import new_client_id, new_prompt_id
from airflow_comfy.protocol.outputs import OutputRef
from airflow_comfy.protocol.states import (
    PromptState,
    PromptStatus,
    queue_remaining,
    resolve_status,
    status_from_history,
)


class ComfyUIHook(BaseHook):
    """Talk to a ComfyUI server through the Airflow connection ``comfyui_conn_id``.

    :param comfyui_conn_id: an Airflow connection of type ``comfyui``.
    :param settings: ready-made settings instead of a connection (tests, the CLI, the stand-in).
    """

    conn_name_attr = "comfyui_conn_id"
    default_conn_name = "comfyui_default"
    conn_type = "comfyui"
    hook_name = "ComfyUI"

    def __init__(
        self,
        comfyui_conn_id: str = default_conn_name,
        *,
        settings: ComfyUISettings | None = None,
        server: str | None = None,
        capability_routing: bool = False,
    ) -> None:
        super().__init__()
        self.comfyui_conn_id = comfyui_conn_id
        self.capability_routing = capability_routing
        self._settings = settings
        self._server = server.rstrip("/") if server else None
        self._pinned = False
        self._transport: Transport | None = None
        self._object_info: dict[str, Any] | None = None
        self._jobs_api: bool | None = None

    # --- connection -----------------------------------------------------------------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from airflow_comfy.get_provider_info import ui_field_behaviour

        return ui_field_behaviour()

    @property
    def settings(self) -> ComfyUISettings:
        if self._settings is None:
            conn = self.get_connection(self.comfyui_conn_id)
            self._settings = settings_from_connection(conn)
            _mask(self._settings)
        if self._server is not None and not self._pinned:
            server, self._server = self._server, None
            self.pin(server)
        return self._settings

    # --- several servers (extra.hosts) ------------------------------------------------------------

    @property
    def servers(self) -> tuple[str, ...]:
        """Every server of the connection; one for an ordinary connection."""
        return self.settings.servers

    @property
    def is_pinned(self) -> bool:
        """True once the hook talks to one chosen server (always true for a one-server connection)."""
        return self._pinned or not self.settings.is_pool

    def pin(self, server: str) -> None:
        """Talk to ``server`` (one of :attr:`servers`) from now on: waiting, files, cancel, everything."""
        settings = self.settings.for_server(server)
        if settings.base_url != self.settings.base_url:
            self.close()
            self._transport = None
            self._object_info = None
            self._jobs_api = None
        self._settings = settings
        self._pinned = True

    def choose_server(self, workflow: Mapping[str, Any] | None = None) -> str:
        """Pin the least loaded reachable server (with every node type of ``workflow`` when
        :attr:`capability_routing` is on) and return it. A one-server connection just returns it."""
        from airflow_comfy.hooks import pool

        if self.is_pinned:
            return self.base_url
        required = pool.required_node_types(workflow) if self.capability_routing else frozenset()
        chosen, states = pool.choose(self.settings, required)
        for state in states:
            if not state.eligible:
                self.log.warning("Skipping ComfyUI server %s: %s", state.url, state.problem)
        loads = ", ".join(f"{s.url}={s.queue_remaining}" for s in states if s.eligible)
        self.log.info("Chose ComfyUI server %s (queue lengths: %s)", chosen, loads)
        self.pin(chosen)
        return chosen

    def locate_prompt(
        self, prompt_id: str, *, prefer: str | None = None, strict: bool = False
    ) -> PromptStatus:
        """Find ``prompt_id`` on the connection's servers and pin the one that knows it.

        The current server (or ``prefer``) is asked first, then the others of the pool. Returns
        ``NOT_FOUND``, leaving the hook as it was, when no server has it. With ``strict`` (a retry,
        whose earlier try may have submitted to any server), a server that cannot be asked makes
        this raise :class:`ComfyUIConnectionError` instead: the prompt may be there, and submitting
        elsewhere would start a second job. A one-server connection is just :meth:`get_prompt_status`.
        """
        if not self.settings.is_pool:
            return self.get_prompt_status(prompt_id)
        from airflow_comfy.hooks import pool

        first = (prefer or (self.base_url if self._pinned else "")).rstrip("/")
        found, status = pool.locate(self.settings, prompt_id, first=first, strict=strict, log=self.log)
        if found is not None:
            self.pin(found)
        return status

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = Transport(self.settings)
        return self._transport

    def get_conn(self) -> requests.Session:
        """The configured ``requests`` session (auth headers and TLS settings applied)."""
        return self.transport.session

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def test_connection(self) -> tuple[bool, str]:
        """Used by the Airflow UI's *Test* button: GET /system_stats."""
        try:
            stats = self.get_system_stats()
        except ComfyUIError as exc:
            return False, str(exc)
        system = stats.get("system") or {}
        devices = ", ".join(str(d.get("name")) for d in stats.get("devices") or []) or "no device reported"
        version = system.get("comfyui_version") or "unknown version"
        return True, f"Connected to ComfyUI {version} at {self.base_url} ({devices})"

    # --- submitting -----------------------------------------------------------------------------

    def submit_prompt(
        self,
        workflow: Mapping[str, Any],
        *,
        client_id: str | None = None,
        prompt_id: str | None = None,
        front: bool = False,
        extra_data: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """POST /prompt. Returns ``{"prompt_id", "number", "node_errors", "client_id"}``.

        On a connection with several servers, the least loaded one is chosen first (:meth:`choose_server`)
        and the hook stays pinned to it. The answer carries ``server``, the chosen base URL.

        A 400 raises :class:`ComfyUIValidationError` listing every node's problem. Transient failures
        are retried; a 500 (ComfyUI's answer to a body it could not parse) is retried once only.
        The same ``prompt_id`` is never submitted twice by one call.
        """
        if not self.is_pinned:
            self.choose_server(workflow)
        client_id = client_id or new_client_id()
        prompt_id = prompt_id or new_prompt_id()
        body: dict[str, Any] = {"prompt": dict(workflow), "client_id": client_id, "prompt_id": prompt_id}
        if front:
            body["front"] = True
        if extra_data:
            body["extra_data"] = dict(extra_data)
        already: list[dict[str, Any]] = []
        attempts_500 = [0]

        def retry_if(exc: BaseException) -> bool:
            if isinstance(exc, ComfyUIHTTPError) and exc.status_code == 500:
                attempts_500[0] += 1
                return attempts_500[0] <= 1
            return True

        def before_retry(exc: BaseException) -> None:
            # The failed attempt may have reached ComfyUI (e.g. the answer was lost): never submit twice.
            # One quick look without retries of its own (the outer loop already backs off). When the
            # request may have arrived and the look fails too, give up rather than risk a second GPU
            # job: the Airflow retry re-attaches to the prompt if it did arrive.
            try:
                history = self.transport.json("GET", urls.history_path(prompt_id), retries=0)
                queue = self.transport.json("GET", urls.QUEUE, retries=0)
                if resolve_status(prompt_id, history, queue).state is PromptState.NOT_FOUND and not (
                    isinstance(exc, ComfyUIError) and exc.never_sent
                ):
                    # A POST that timed out may still be in ComfyUI's validation: look once more.
                    time.sleep(min(self.settings.read_timeout, 2.0))
                    history = self.transport.json("GET", urls.history_path(prompt_id), retries=0)
                    queue = self.transport.json("GET", urls.QUEUE, retries=0)
            except ComfyUIError:
                if isinstance(exc, ComfyUIError) and exc.never_sent:
                    return
                raise exc from None
            status = resolve_status(prompt_id, history, queue)
            if status.state is not PromptState.NOT_FOUND:
                already.append({"prompt_id": prompt_id, "number": None, "node_errors": {}})
                raise _AlreadySubmitted

        try:
            status_code, answer = self.transport.json_answer(
                "POST",
                urls.PROMPT,
                json_body=body,
                allow_status=frozenset({400}),
                retry_if=retry_if,
                before_retry=before_retry,
            )
        except _AlreadySubmitted:
            self.log.info("Prompt %s reached ComfyUI on an earlier attempt; not submitting again", prompt_id)
            return {**already[0], "client_id": client_id, "server": self.base_url}
        if status_code == 400:
            raise errors.validation_error(answer if isinstance(answer, Mapping) else {"error": str(answer)})
        if not isinstance(answer, Mapping) or not isinstance(answer.get("prompt_id"), str):
            raise ComfyUIResponseError(f"POST /prompt answered without a prompt_id: {str(answer)[:200]}")
        if answer.get("node_errors"):
            self.log.warning(
                "ComfyUI accepted prompt %s but skipped invalid outputs:\n%s",
                answer["prompt_id"],
                "\n".join(errors.node_error_lines(answer["node_errors"])),
            )
        self.log.info(
            "Submitted prompt %s to %s (queue number %s)",
            answer["prompt_id"],
            self.base_url,
            answer.get("number"),
        )
        return {**answer, "client_id": client_id, "server": self.base_url}

    # --- reading state ----------------------------------------------------------------------------

    def get_history(
        self, prompt_id: str | None = None, *, max_items: int | None = None, offset: int | None = None
    ) -> dict[str, Any]:
        """GET /history[/{id}]: ``{}`` for pending, running and unknown prompts (ComfyUI's own rule)."""
        params = {k: v for k, v in (("max_items", max_items), ("offset", offset)) if v is not None}
        return self._json_object("GET", urls.history_path(prompt_id), params=params or None)

    def get_queue(self) -> dict[str, Any]:
        """GET /queue: ``{"queue_running": [...], "queue_pending": [...]}``."""
        return self._json_object("GET", urls.QUEUE)

    def get_queue_remaining(self) -> int:
        """GET /prompt: the number of running plus pending prompts."""
        info = self._json_object("GET", urls.PROMPT)
        try:
            return queue_remaining(info)
        except ValueError as exc:
            raise ComfyUIResponseError(f"ComfyUI GET /prompt at {self.base_url}: {exc}") from None

    def get_prompt_status(self, prompt_id: str) -> PromptStatus:
        """History first, then the queue (a prompt may finish between the two reads)."""
        history = self.get_history(prompt_id)
        found = status_from_history(prompt_id, history)
        if found is not None:
            return found
        queue = self.get_queue()
        status = resolve_status(prompt_id, {}, queue)
        if status.state is PromptState.NOT_FOUND:
            status = resolve_status(prompt_id, self.get_history(prompt_id), queue)
        return status

    def get_object_info(self, node_class: str | None = None, *, refresh: bool = False) -> dict[str, Any]:
        """GET /object_info (cached per hook) or /object_info/{class} (``{}`` for an unknown class)."""
        if node_class is not None:
            return self._json_object("GET", urls.object_info_path(node_class))
        if self._object_info is None or refresh:
            self._object_info = self._json_object("GET", urls.OBJECT_INFO)
        return self._object_info

    def get_system_stats(self) -> dict[str, Any]:
        return self._json_object("GET", urls.SYSTEM_STATS)

    def get_features(self) -> dict[str, Any]:
        """GET /features (server capabilities such as ``max_upload_size``); ``{}`` on servers without it."""
        try:
            return self._json_object("GET", urls.FEATURES)
        except ComfyUIHTTPError as exc:
            if exc.status_code == 404:
                return {}
            raise

    def supports_jobs_api(self) -> bool:
        """Whether the server has ComfyUI 0.4's ``/api/jobs`` (probed once per hook)."""
        if self._jobs_api is None:
            try:
                self.transport.request("GET", urls.job_path(), params={"limit": 1}, retries=1).close()
                self._jobs_api = True
            except ComfyUIHTTPError as exc:
                if exc.status_code not in (404, 405):
                    raise
                self._jobs_api = False
        return self._jobs_api

    # --- changing state ---------------------------------------------------------------------------

    def delete_from_queue(self, prompt_ids: list[str]) -> None:
        """POST /queue ``{"delete": ids}``: removes pending prompts (a running one is not affected)."""
        self._post_no_body(urls.QUEUE, {"delete": list(prompt_ids)})

    def clear_queue(self) -> None:
        """POST /queue ``{"clear": true}``: empties the pending queue; the running prompt continues."""
        self._post_no_body(urls.QUEUE, {"clear": True})

    def delete_history(self, prompt_ids: list[str]) -> None:
        self._post_no_body(urls.HISTORY, {"delete": list(prompt_ids)})

    def clear_history(self) -> None:
        self._post_no_body(urls.HISTORY, {"clear": True})

    def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt. With ``prompt_id`` only that prompt is stopped, and only if it is running.

        Without it, whatever runs now is interrupted — whoever submitted it. Prefer :meth:`cancel_prompt`.
        """
        self._post_no_body(urls.INTERRUPT, {"prompt_id": prompt_id} if prompt_id else None)

    def free(self, *, unload_models: bool = True, free_memory: bool = True) -> None:
        """POST /free: unload models and/or drop the executor cache."""
        self._post_no_body(urls.FREE, {"unload_models": unload_models, "free_memory": free_memory})

    def cancel_prompt(self, prompt_id: str) -> str:
        """Stop exactly this prompt wherever it is. Returns what was done, for the log."""
        if self.supports_jobs_api():
            try:
                self.transport.request("POST", urls.job_path(prompt_id, "cancel"), retries=2).close()
                return "cancelled through /api/jobs"
            except ComfyUIHTTPError as exc:
                if exc.status_code not in (404, 405):
                    raise  # a server with /api/jobs but no cancel route: fall back below
        status = self.get_prompt_status(prompt_id)
        if status.state is PromptState.PENDING:
            self.delete_from_queue([prompt_id])
            # It may have started between the two calls: interrupting by id is harmless otherwise.
            if self.get_prompt_status(prompt_id).state is PromptState.RUNNING:
                self.interrupt(prompt_id)
                return "interrupted (it started while being removed from the queue)"
            return "removed from the queue"
        if status.state is PromptState.RUNNING:
            self.interrupt(prompt_id)
            return "interrupted"
        return f"nothing to do (it is {status.state.value})"

    # --- files ------------------------------------------------------------------------------------

    @contextmanager
    def view(
        self,
        filename: str,
        subfolder: str = "",
        folder_type: str = "output",
        *,
        preview: str | None = None,
        channel: str | None = None,
    ) -> Iterator[requests.Response]:
        """GET /view as a streamed response (use as a context manager; iterate ``iter_content``)."""
        params: dict[str, str] = urls.view_params(filename, subfolder, folder_type)
        if preview:
            params["preview"] = preview
        if channel:
            params["channel"] = channel
        response = self.transport.request("GET", urls.VIEW, params=params, stream=True)
        try:
            yield response
        finally:
            response.close()

    def view_url(self, ref: OutputRef) -> str:
        """A credential-free /view URL for ``ref``."""
        return urls.view_url(self.base_url, ref.filename, ref.subfolder, ref.type)

    def download(
        self, ref: OutputRef, dest_dir: str | os.PathLike[str], *, keep_subfolder: bool = True
    ) -> Path:
        """Stream one output into ``dest_dir`` (never outside it, whatever name the server sent).

        ``dest_dir`` is a local folder, or an object-storage URI (``s3://bucket/prefix``) written through
        Airflow's ``ObjectStoragePath`` (then an ``ObjectStoragePath`` is returned). A failed transfer
        leaves no partial file behind. See :mod:`airflow_comfy.hooks.files`.
        """
        from airflow_comfy.hooks.files import download

        return download(self, ref, dest_dir, keep_subfolder=keep_subfolder)

    def upload_image(
        self,
        source: str | os.PathLike[str] | bytes | IO[bytes],
        *,
        filename: str | None = None,
        subfolder: str = "",
        folder_type: str = "input",
        overwrite: bool = False,
    ) -> dict[str, str]:
        """POST /upload/image (images, and video/audio files too). Returns ``{"name", "subfolder", "type"}``.

        ComfyUI reuses the existing name for identical bytes and renames (``name (1).png``) otherwise.
        """
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            if not path.is_file():
                raise ComfyUIError(f"Cannot upload {path}: no such file")
            handle: IO[bytes] = path.open("rb")
            name = filename or path.name
        elif isinstance(source, bytes):
            import io

            handle, name = io.BytesIO(source), filename or "upload.png"
        else:
            handle, name = source, filename or Path(getattr(source, "name", "upload.png")).name
        data = {"type": folder_type, "subfolder": subfolder, "overwrite": "true" if overwrite else "false"}
        try:
            answer = self._json_object("POST", urls.UPLOAD_IMAGE, data=data, files={"image": (name, handle)})
        finally:
            if isinstance(source, str | os.PathLike):
                handle.close()
        return {k: str(answer.get(k, "")) for k in ("name", "subfolder", "type")}

    def get_userdata(self, path: str) -> bytes:
        """GET /userdata/{path}: a file the web UI saved for the user (``workflows/a.json``), as bytes.

        A missing file raises :class:`ComfyUIHTTPError` with ``status_code`` 404.
        """
        from airflow_comfy.hooks.userdata import UserDataClient

        return UserDataClient(self.transport).get_userdata(path)

    def list_userdata(self, directory: str = "workflows") -> list[str]:
        """GET /userdata?dir=...&recurse=true: the files under ``directory``, relative to it, sorted."""
        from airflow_comfy.hooks.userdata import UserDataClient

        return UserDataClient(self.transport).list_userdata(directory)

    # --- WebSocket and waiting --------------------------------------------------------------------

    def websocket(self, client_id: str) -> ComfyUIWebSocket:
        """An unopened WebSocket for ``client_id`` (use ``with hook.websocket(cid) as ws:``)."""
        return ComfyUIWebSocket(self.settings, client_id)

    def wait_for_prompt(self, prompt_id: str, **kwargs: Any) -> PromptStatus:
        """Block until the prompt ends; see :class:`airflow_comfy.hooks.waiting.PromptWaiter`."""
        from airflow_comfy.hooks.waiting import PromptWaiter

        return PromptWaiter(self, prompt_id, **kwargs).wait()

    # --- helpers ----------------------------------------------------------------------------------

    def _json_object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = self.transport.json(method, path, **kwargs)
        if not isinstance(body, dict):
            raise ComfyUIResponseError(
                f"ComfyUI {method} {urls.redact_url(self.transport.url(path))} answered "
                f"{type(body).__name__} where a JSON object was expected",
            )
        return body

    def _post_no_body(self, path: str, body: Any) -> None:
        self.transport.request("POST", path, json_body=body).close()


class _AlreadySubmitted(Exception):
    """Internal: a retried POST /prompt found that the first attempt had reached the server."""


def _mask(settings: ComfyUISettings) -> None:
    """Register credentials with Airflow's secrets masker so no task log can show them."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older Task SDKs
        return
    for value in settings.auth_headers.secret_values():
        mask_secret(value)
