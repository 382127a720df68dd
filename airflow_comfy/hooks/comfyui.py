"""``ComfyUIHook``: one Airflow connection of type ``comfyui``, and the servers behind it.

The hook is the connection: its settings (:mod:`airflow_comfy.hooks.connection`), its servers
(``host`` plus ``extra.hosts``), one immutable :class:`~airflow_comfy.hooks.client.ComfyUIClient`
per server (:meth:`ComfyUIHook.client`), the choice of a server for new work
(:meth:`ComfyUIHook.choose`, weighted towards the least loaded: :mod:`airflow_comfy.hooks.pool`)
and the search for a prompt's server (:meth:`ComfyUIHook.locate`). For convenience it also
answers every endpoint method of the client itself, on its *default* server (the ``server`` argument, else the
connection's first), except :meth:`ComfyUIHook.submit_prompt`, which on a pool chooses a server.

Invariants: nothing here changes after construction except caches (the settings read once, one
client per server); which server a call goes to is decided by its arguments, never by an earlier
call; credentials are registered with Airflow's secrets masker as soon as they are read.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

import requests
from airflow.sdk import BaseHook

from airflow_comfy.exceptions import ComfyUIError
from airflow_comfy.hooks import pool
from airflow_comfy.hooks.client import ComfyUIClient
from airflow_comfy.hooks.connection import ComfyUISettings, settings_from_connection
from airflow_comfy.protocol.states import PromptStatus

#: A connection test answers within this many seconds of connecting: a person waits at the screen.
TEST_CONNECT_TIMEOUT = 5.0
TEST_READ_TIMEOUT = 15.0


class ComfyUIHook(BaseHook):
    """Talk to the ComfyUI server(s) of the Airflow connection ``comfyui_conn_id``.

    :param comfyui_conn_id: an Airflow connection of type ``comfyui``.
    :param settings: ready-made settings instead of a connection (tests, the CLI, the stand-in).
    :param server: the default server, one of the connection's (e.g. the one a prompt was sent to).
    :param capability_routing: :meth:`choose` only servers whose /object_info has every node type
        of the workflow.
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
        self._given_settings = settings
        self._server = server.rstrip("/") if server else None
        self._clients: dict[str, ComfyUIClient] = {}

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from airflow_comfy.get_provider_info import ui_field_behaviour

        return ui_field_behaviour()

    # --- the connection -----------------------------------------------------------------------------

    @cached_property
    def settings(self) -> ComfyUISettings:
        """The connection's settings; ``base_url`` is the default server."""
        settings = self._given_settings
        if settings is None:
            settings = settings_from_connection(self.get_connection(self.comfyui_conn_id))
        _mask(settings)
        return settings.for_server(self._server) if self._server else settings

    @property
    def servers(self) -> tuple[str, ...]:
        """Every server of the connection; one for an ordinary connection."""
        return self.settings.servers

    @property
    def base_url(self) -> str:
        """The default server."""
        return self.settings.base_url

    def client(self, server: str | None = None) -> ComfyUIClient:
        """The client of ``server`` (one of :attr:`servers`; default: the default server)."""
        url = (server or self.base_url).rstrip("/")
        found = self._clients.get(url)
        if found is None:
            found = self._clients[url] = ComfyUIClient(
                self.settings.for_server(url), log=self.log, owner=self
            )
        return found

    def choose(self, workflow: Mapping[str, Any] | None = None) -> ComfyUIClient:
        """The client of the server new work should go to.

        A one-server connection, or a hook made with ``server=``, always answers that server. On a
        pool, a reachable server picked at random, weighted towards the least loaded (with every
        node type of ``workflow`` when :attr:`capability_routing` is on); see :mod:`airflow_comfy.hooks.pool`.
        """
        if not self.settings.is_pool or self._server:
            return self.client()
        required = pool.required_node_types(workflow) if self.capability_routing else frozenset()
        chosen, states = pool.choose(self.settings, required)
        for state in states:
            if not state.eligible:
                self.log.warning("Skipping ComfyUI server %s: %s", state.url, state.problem)
        loads = ", ".join(f"{s.url}={s.queue_remaining}" for s in states if s.eligible)
        self.log.info("Chose ComfyUI server %s (queue lengths: %s)", chosen, loads)
        return self.client(chosen)

    def locate(
        self, prompt_id: str, *, strict: bool = False, prefer: str | None = None
    ) -> tuple[ComfyUIClient | None, PromptStatus]:
        """The client of the server that knows ``prompt_id``, and the prompt's status there.

        A one-server connection (or a hook made with ``server=``) reads that server's status (the
        client is returned whatever the status). On a pool, ``prefer`` is asked first, then the
        others; ``(None, NOT_FOUND)`` when none has it. With ``strict`` (a retry, whose earlier try
        may have submitted to any server) a server that cannot be asked raises
        :class:`ComfyUIConnectionError`: submitting elsewhere could start a second job.
        """
        if not self.settings.is_pool or self._server:
            client = self.client()
            return client, client.get_prompt_status(prompt_id)
        first = (prefer or "").rstrip("/")
        ordered = sorted(self.servers, key=lambda url: url != first)
        return pool.locate([self.client(url) for url in ordered], prompt_id, strict=strict, log=self.log)

    def test_connection(self) -> tuple[bool, str]:
        """The Airflow UI's *Test* button: GET /system_stats, answered within seconds (no retries)."""
        quick = dataclasses.replace(
            self.settings,
            max_retries=0,
            connect_timeout=min(self.settings.connect_timeout, TEST_CONNECT_TIMEOUT),
            read_timeout=min(self.settings.read_timeout, TEST_READ_TIMEOUT),
        )
        try:
            with ComfyUIClient(quick) as client:
                stats = client.get_system_stats()
        except ComfyUIError as exc:
            return False, str(exc)
        system = stats.get("system") or {}
        devices = ", ".join(str(d.get("name")) for d in stats.get("devices") or []) or "no device reported"
        version = system.get("comfyui_version") or "unknown version"
        return True, f"Connected to ComfyUI {version} at {self.base_url} ({devices})"

    @property
    def lineage_context(self) -> ComfyUIHook:
        """What hook-level lineage is recorded against (its clients record against it too)."""
        return self

    def get_conn(self) -> requests.Session:
        """The configured ``requests`` session of the default server."""
        return self.client().transport.session

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    # --- the API of the default server --------------------------------------------------------------

    def submit_prompt(self, workflow: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
        """``ComfyUIClient.submit_prompt`` on :meth:`choose`'s server (the answer's ``server``)."""
        return self.choose(workflow).submit_prompt(workflow, **kwargs)


def _on_default_server(name: str) -> Callable[..., Any]:
    method = getattr(ComfyUIClient, name)

    @functools.wraps(method)
    def call(self: ComfyUIHook, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.client(), name)(*args, **kwargs)

    return call


#: Endpoint methods of :class:`ComfyUIClient` the hook answers on its default server.
DEFAULT_SERVER_API = (
    "get_history", "get_queue", "get_queue_remaining", "get_prompt_status", "get_object_info",
    "get_system_stats", "get_features", "supports_jobs_api", "delete_from_queue", "clear_queue",
    "delete_history", "clear_history", "interrupt", "free", "cancel_prompt", "view", "view_url",
    "download", "upload_image", "get_userdata", "list_userdata", "websocket", "wait_for_prompt",
)  # fmt: skip
for _name in DEFAULT_SERVER_API:
    setattr(ComfyUIHook, _name, _on_default_server(_name))


def _mask(settings: ComfyUISettings) -> None:
    """Register credentials with Airflow's secrets masker so no task log can show them."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older Task SDKs
        return
    for value in settings.auth_headers.secret_values():
        mask_secret(value)
