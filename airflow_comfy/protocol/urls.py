"""Where things are on a ComfyUI server: base URLs, endpoint paths, WebSocket and /view URLs.

Pure functions, no I/O. The sync hook, the async trigger and the stand-in server all take their
paths from here, so a route of ComfyUI's API is spelled in exactly one place.

Invariants:
- a base URL never ends with ``/`` and never carries credentials (``redact_url`` strips them);
- every endpoint is ``base_url + path`` with ``path`` starting with ``/``, so a reverse-proxy
  prefix (``/comfy``) or ComfyUI's own ``/api`` prefix given in the base URL is kept for every call.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

DEFAULT_PORT = 8188

PROMPT = "/prompt"
HISTORY = "/history"
QUEUE = "/queue"
INTERRUPT = "/interrupt"
FREE = "/free"
VIEW = "/view"
UPLOAD_IMAGE = "/upload/image"
OBJECT_INFO = "/object_info"
SYSTEM_STATS = "/system_stats"
FEATURES = "/features"
WS = "/ws"
USERDATA = "/userdata"  # files the web UI saves for the user (workflows/...), ComfyUI's app/user_manager.py
# ComfyUI >= 0.4 only; probe before use (protocol.flows.probe_jobs_api). Only under /api.
JOBS = "/api/jobs"
_API = "/api"

_SECRET_QUERY_KEYS = frozenset({"token", "access_token", "api_key", "apikey", "key", "password", "auth"})


def history_path(prompt_id: str | None = None) -> str:
    """``/history`` or ``/history/<prompt_id>``."""
    return HISTORY if prompt_id is None else f"{HISTORY}/{quote(prompt_id, safe='')}"


def object_info_path(node_class: str | None = None) -> str:
    """``/object_info`` or ``/object_info/<node_class>``."""
    return OBJECT_INFO if node_class is None else f"{OBJECT_INFO}/{quote(node_class, safe='')}"


def userdata_path(path: str) -> str:
    """``/userdata/<path>`` with the whole path as one segment (``/`` sent as ``%2F``, as ComfyUI needs)."""
    return f"{USERDATA}/{quote(path, safe='')}"


def job_path(prompt_id: str | None = None, action: str | None = None) -> str:
    """``/api/jobs[/<id>[/<action>]]`` (ComfyUI >= 0.4); :func:`endpoint` keeps one ``/api``."""
    path = JOBS
    if prompt_id is not None:
        path += "/" + quote(prompt_id, safe="")
        if action:
            path += "/" + action
    return path


def build_base_url(
    host: str,
    *,
    port: int | None = None,
    schema: str | None = None,
    use_ssl: bool | None = None,
    path_prefix: str | None = None,
) -> str:
    """Make ``scheme://host[:port][/prefix]`` from connection fields.

    ``host`` may itself be a full URL (``https://gpu-1.example.com/comfy``); its scheme, port and
    path then win over the separate fields unless those are given explicitly. ``schema`` or
    ``use_ssl`` choose ``https``; without either the scheme is ``http``. A bare host without a
    port gets ComfyUI's default 8188 over http and the scheme's default over https.
    """
    host = (host or "").strip()
    if not host:
        raise ValueError("The ComfyUI connection has no host: set it to a host name or a URL.")
    if "://" not in host:
        host = "//" + host
    parts = urlsplit(host)
    scheme = (schema or parts.scheme or "").lower()
    if scheme in ("ws", "wss"):
        scheme = "https" if scheme == "wss" else "http"
    if scheme not in ("", "http", "https"):
        raise ValueError(f"Unsupported scheme {scheme!r} for ComfyUI: use http or https.")
    if use_ssl:
        scheme = "https"
    scheme = scheme or "http"
    hostname = parts.hostname or ""
    if not hostname:
        raise ValueError(f"Cannot read a host name from {redact_url(host.lstrip('/'))!r}.")
    if ":" in hostname:  # IPv6 literal
        hostname = f"[{hostname}]"
    try:
        url_port = parts.port
    except ValueError:
        raise ValueError(f"Cannot read a port from {redact_url(host.lstrip('/'))!r}.") from None
    effective_port = port or url_port
    if effective_port is not None and not 0 < int(effective_port) < 65536:
        raise ValueError(f"Port {effective_port!r} is out of range: use 1-65535.")
    if effective_port is None and scheme == "http":
        effective_port = DEFAULT_PORT
    netloc = hostname if effective_port is None else f"{hostname}:{effective_port}"
    path = parts.path.rstrip("/")
    if path_prefix:
        path = path + "/" + path_prefix.strip("/")
    return urlunsplit((scheme, netloc, path.rstrip("/"), "", ""))


def endpoint(base_url: str, path: str) -> str:
    """Join a base URL and an endpoint path such as ``/prompt``.

    ComfyUI serves every route under ``/api`` too; a route that exists *only* there (``/api/jobs``)
    is spelled with its prefix, and a base URL that already ends with ``/api`` does not get it twice.
    """
    base = base_url.rstrip("/")
    if path.startswith(_API + "/") and base.endswith(_API):
        path = path[len(_API) :]
    return base + path


def ws_url(base_url: str, client_id: str) -> str:
    """The WebSocket URL for ``client_id``: http→ws, https→wss, same host, port and prefix."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    query = urlencode({"clientId": client_id})
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + WS, query, ""))


def view_params(filename: str, subfolder: str = "", folder_type: str = "output") -> dict[str, str]:
    """Query parameters of ``GET /view`` for one file."""
    return {"filename": filename, "subfolder": subfolder or "", "type": folder_type or "output"}


def view_url(base_url: str, filename: str, subfolder: str = "", folder_type: str = "output") -> str:
    """A credential-free ``/view`` URL for one file (safe to log, show and put in XCom)."""
    query = urlencode(view_params(filename, subfolder, folder_type))
    return redact_url(endpoint(base_url, VIEW) + "?" + query)


def server_label(base_url: str) -> str:
    """A folder-name-safe label of a server: ``http://gpu-1:8188/comfy`` → ``gpu-1_8188_comfy``."""
    parts = urlsplit(base_url)
    raw = "_".join(p for p in (parts.hostname or "server", str(parts.port or ""), parts.path.strip("/")) if p)
    label = "".join(c if c.isalnum() or c in "-." else "_" for c in raw)
    return label if label.strip(".") else "server"  # never "." or "..": it names a folder


def redact_url(url: str) -> str:
    """``url`` without user info and without secret-looking query values; safe to log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        pairs = []
        for item in query.split("&"):
            key, sep, _value = item.partition("=")
            pairs.append(f"{key}=***" if sep and key.lower() in _SECRET_QUERY_KEYS else item)
        query = "&".join(pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def query_string(params: Mapping[str, object]) -> str:
    """URL-encode ``params`` dropping ``None`` values."""
    return urlencode({k: v for k, v in params.items() if v is not None})
