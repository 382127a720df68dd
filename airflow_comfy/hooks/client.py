"""``ComfyUIClient``: ComfyUI's whole HTTP and WebSocket API on one server, with frozen settings.

One method per endpoint (submit, history, queue, interrupt, free, view/download, upload,
object_info, system_stats, features, /ws) plus the composite operations every waiter needs: the
status of a prompt, cancelling exactly one prompt, and waiting for a prompt. The composite ones run
the flows of :mod:`airflow_comfy.protocol.flows`, the same the async client runs.

Invariants:
- a client talks to exactly one server, the one of its settings, for its whole life (a connection
  with several servers has one client per server: :class:`~airflow_comfy.hooks.comfyui.ComfyUIHook`);
- every submission carries a ``client_id`` and a ``prompt_id`` (generated when not given), and is
  never sent twice for one call (:func:`airflow_comfy.protocol.flows.submit_prompt`);
- cancelling touches only the given prompt, never a global interrupt.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import requests

from airflow_comfy.exceptions import ComfyUIError, ComfyUIHTTPError, ComfyUIResponseError
from airflow_comfy.hooks import catalog, downloads, pool
from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.hooks.transport import Transport
from airflow_comfy.hooks.userdata import UserDataClient
from airflow_comfy.hooks.waiting import PromptWaiter
from airflow_comfy.hooks.websocket import ComfyUIWebSocket
from airflow_comfy.protocol import errors, flows, urls
from airflow_comfy.protocol.ids import new_client_id, new_prompt_id
from airflow_comfy.protocol.outputs import OutputRef
from airflow_comfy.protocol.states import PromptStatus, queue_remaining

# base URL -> whether the server has /api/jobs (probed once per process and server).
_JOBS_API: dict[str, bool] = {}
_LOCK = threading.Lock()


class ComfyUIClient:
    """Talk to the one ComfyUI server of ``settings`` (see the module docstring)."""

    def __init__(self, settings: ComfyUISettings, *, log: Any = None, owner: Any = None) -> None:
        self.settings = settings
        self.transport = Transport(settings)
        self.log = log or logging.getLogger(__name__)
        #: What lineage is recorded against: the hook this client belongs to, else the client.
        self.lineage_context = owner if owner is not None else self

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> ComfyUIClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- submitting -------------------------------------------------------------------------------

    def submit_prompt(
        self,
        workflow: Mapping[str, Any],
        *,
        client_id: str | None = None,
        prompt_id: str | None = None,
        front: bool = False,
        extra_data: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """POST /prompt. Returns ``{"prompt_id", "number", "node_errors", "client_id", "server"}``.

        A 400 raises :class:`ComfyUIValidationError` listing every node's problem; see
        :func:`airflow_comfy.protocol.flows.submit_prompt` for retries and duplicates.
        """
        body: dict[str, Any] = {
            "prompt": dict(workflow),
            "client_id": client_id or new_client_id(),
            "prompt_id": prompt_id or new_prompt_id(),
        }
        if front:
            body["front"] = True
        if extra_data:
            body["extra_data"] = dict(extra_data)
        try:
            answer = self.transport.run(flows.submit_prompt(body))
        finally:
            pool.landed(self.base_url)  # a pool's next survey counts it (or it failed): see hooks.pool
        if answer.get("node_errors"):
            self.log.warning(
                "ComfyUI accepted prompt %s but skipped invalid outputs:\n%s",
                answer["prompt_id"],
                "\n".join(errors.node_error_lines(answer["node_errors"])),
            )
        if not answer.get("already_submitted"):
            self.log.info(
                "Submitted prompt %s to %s (queue number %s)",
                answer["prompt_id"],
                self.base_url,
                answer.get("number"),
            )
        return {**answer, "client_id": body["client_id"], "server": self.base_url}

    # --- reading state ------------------------------------------------------------------------------

    def get_history(
        self, prompt_id: str | None = None, *, max_items: int | None = None, offset: int | None = None
    ) -> dict[str, Any]:
        """GET /history[/{id}]: ``{}`` for pending, running and unknown prompts (ComfyUI's own rule)."""
        params = {k: v for k, v in (("max_items", max_items), ("offset", offset)) if v is not None}
        return self.transport.json_object("GET", urls.history_path(prompt_id), params=params or None)

    def get_queue(self) -> dict[str, Any]:
        """GET /queue: ``{"queue_running": [...], "queue_pending": [...]}``."""
        return self.transport.json_object("GET", urls.QUEUE)

    def get_queue_remaining(self) -> int:
        """GET /prompt: the number of running plus pending prompts."""
        info = self.transport.json_object("GET", urls.PROMPT)
        try:
            return queue_remaining(info)
        except ValueError as exc:
            shown = urls.redact_url(self.transport.url(urls.PROMPT))
            raise ComfyUIResponseError(f"ComfyUI GET {shown}: {exc}", url=shown) from None

    def get_prompt_status(self, prompt_id: str) -> PromptStatus:
        """Queue, then history: see :func:`airflow_comfy.protocol.flows.read_status`."""
        return self.transport.run(flows.read_status(prompt_id))

    def get_object_info(self, node_class: str | None = None, *, refresh: bool = False) -> dict[str, Any]:
        """GET /object_info (cached: :mod:`airflow_comfy.hooks.catalog`; never mutate it) or
        /object_info/{class} (``{}`` for an unknown class)."""
        if node_class is not None:
            return self.transport.json_object("GET", urls.object_info_path(node_class))
        return catalog.object_info(self.transport, refresh=refresh)

    def get_system_stats(self) -> dict[str, Any]:
        return self.transport.json_object("GET", urls.SYSTEM_STATS)

    def get_features(self) -> dict[str, Any]:
        """GET /features (server capabilities such as ``max_upload_size``); ``{}`` on servers without it."""
        try:
            return self.transport.json_object("GET", urls.FEATURES)
        except ComfyUIHTTPError as exc:
            if exc.status_code == 404:
                return {}
            raise

    def supports_jobs_api(self) -> bool:
        """Whether the server has ComfyUI 0.4's ``/api/jobs`` (probed once per process)."""
        known = _JOBS_API.get(self.base_url)
        if known is None:
            known = self.transport.run(flows.probe_jobs_api())
            with _LOCK:
                _JOBS_API[self.base_url] = known
        return known

    # --- changing state -----------------------------------------------------------------------------

    def delete_from_queue(self, prompt_ids: list[str]) -> None:
        """POST /queue ``{"delete": ids}``: removes pending prompts (a running one is not affected)."""
        self._post(urls.QUEUE, {"delete": list(prompt_ids)})

    def clear_queue(self) -> None:
        """POST /queue ``{"clear": true}``: empties the pending queue; the running prompt continues."""
        self._post(urls.QUEUE, {"clear": True})

    def delete_history(self, prompt_ids: list[str]) -> None:
        self._post(urls.HISTORY, {"delete": list(prompt_ids)})

    def clear_history(self) -> None:
        self._post(urls.HISTORY, {"clear": True})

    def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt. With ``prompt_id`` only that prompt is stopped, and only if it is running.

        Without it, whatever runs now is interrupted — whoever submitted it. Prefer :meth:`cancel_prompt`.
        """
        self._post(urls.INTERRUPT, {"prompt_id": prompt_id} if prompt_id else None)

    def free(self, *, unload_models: bool = True, free_memory: bool = True) -> None:
        """POST /free: unload models and/or drop the executor cache."""
        self._post(urls.FREE, {"unload_models": unload_models, "free_memory": free_memory})

    def cancel_prompt(self, prompt_id: str) -> str:
        """Stop exactly this prompt wherever it is; returns what was done, for the log."""
        return self.transport.run(flows.cancel_prompt(prompt_id, jobs_api=self.supports_jobs_api()))

    # --- files ----------------------------------------------------------------------------------------

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
    ) -> Any:
        """Stream one output into ``dest_dir``, never outside it (:mod:`airflow_comfy.hooks.downloads`)."""
        return downloads.download(self, ref, dest_dir, keep_subfolder=keep_subfolder)

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
        owned: IO[bytes] | None = None
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            if not path.is_file():
                raise ComfyUIError(f"Cannot upload {path}: no such file")
            owned = path.open("rb")
            handle: IO[bytes] = owned
            name = filename or path.name
        elif isinstance(source, bytes):
            handle, name = io.BytesIO(source), filename or "upload.png"
        else:
            handle, name = source, filename or Path(getattr(source, "name", "upload.png")).name
        data = {"type": folder_type, "subfolder": subfolder, "overwrite": "true" if overwrite else "false"}
        try:
            answer = self.transport.json_object(
                "POST", urls.UPLOAD_IMAGE, data=data, files={"image": (name, handle)}
            )
        finally:
            if owned is not None:
                owned.close()
        return {k: str(answer.get(k, "")) for k in ("name", "subfolder", "type")}

    def get_userdata(self, path: str) -> bytes:
        """GET /userdata/{path}: a file the web UI saved for the user (``workflows/a.json``), as bytes.

        A missing file raises :class:`ComfyUIHTTPError` with ``status_code`` 404.
        """
        return UserDataClient(self.transport).get_userdata(path)

    def list_userdata(self, directory: str = "workflows") -> list[str]:
        """GET /userdata?dir=...&recurse=true: the files under ``directory``, relative to it, sorted."""
        return UserDataClient(self.transport).list_userdata(directory)

    # --- WebSocket and waiting ----------------------------------------------------------------------

    def websocket(self, client_id: str) -> ComfyUIWebSocket:
        """An unopened WebSocket for ``client_id`` (use ``with client.websocket(cid) as ws:``)."""
        return ComfyUIWebSocket(self.settings, client_id)

    def wait_for_prompt(
        self, prompt_id: str, *, on_progress: Callable[[str], None] | None = None, **kwargs: Any
    ) -> PromptStatus:
        """Block until the prompt ends; see :class:`airflow_comfy.hooks.waiting.PromptWaiter`."""
        return PromptWaiter(self, prompt_id, on_progress=on_progress, **kwargs).wait()

    # --- helpers ------------------------------------------------------------------------------------

    def _post(self, path: str, body: Any) -> None:
        self.transport.request("POST", path, json_body=body).close()
