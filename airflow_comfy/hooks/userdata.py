"""Files the ComfyUI web UI saves for its user (``user/<user>/workflows/...``): read and list them.

Shared by :class:`~airflow_comfy.hooks.client.ComfyUIClient` (``get_userdata``/``list_userdata``) and
the command line (which must not import Airflow), over one :class:`~airflow_comfy.hooks.transport.Transport`:
auth headers, TLS, timeouts and retries of transient failures come from the connection settings.

Invariant: a path is sent as one URL segment (``/`` as ``%2F``), which ComfyUI's ``/userdata/{file}``
route needs; a file's bytes are read with the transport's size bound; nothing is written.
"""

from __future__ import annotations

from airflow_comfy.exceptions import ComfyUIHTTPError, ComfyUIResponseError
from airflow_comfy.hooks.transport import Transport
from airflow_comfy.protocol import urls


class UserDataClient:
    """GET /userdata/{path} and GET /userdata?dir=... on one server."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def get_userdata(self, path: str) -> bytes:
        """The bytes of ``path`` (``workflows/a.json``); ComfyUIHTTPError with status 404 when missing."""
        response = self.transport.request("GET", urls.userdata_path(path), stream=True)
        return bytes(self.transport.read_bounded("GET", urls.userdata_path(path), response))

    def list_userdata(self, directory: str = "workflows") -> list[str]:
        """The files under ``directory``, relative to it, sorted; ``[]`` when it does not exist."""
        try:
            body = self.transport.json("GET", urls.USERDATA, params={"dir": directory, "recurse": "true"})
        except ComfyUIHTTPError as exc:
            if exc.status_code == 404:
                return []
            raise
        if not isinstance(body, list):
            raise ComfyUIResponseError(f"GET {urls.USERDATA} answered {type(body).__name__}, not a list")
        return sorted(str(item) for item in body)
