"""Reading an Airflow ``comfyui`` connection into the settings every client needs.

The sync hook and the async trigger both build their requests from :class:`ComfyUISettings`, so
a connection means the same thing in a worker and in the triggerer. Fields:

- host: a host name or a full URL (``https://gpu-1/comfy``); port; schema ``http``/``https``;
- login + password → HTTP Basic; so do credentials in the host URL (``http://user:pass@gpu-1``),
  taken out of the URL (they must agree with login/password when both are set); password alone,
  or ``extra.token`` → ``Authorization: Bearer``;
- extra: ``headers`` (dict or JSON text, e.g. ``{"X-API-Key": "..."}``), ``verify`` (a bool, or
  the path of a CA bundle that exists on the machine reading the connection), ``use_ssl``,
  ``path_prefix``, ``connect_timeout``, ``read_timeout``, ``max_retries``, ``retry_min_wait``,
  ``retry_max_wait``, ``max_ws_frame_bytes`` (the largest WebSocket message accepted, default
  128 MiB), ``max_download_bytes`` (the largest ``/view`` download, default 16 GiB).

URI-form connections deliver every extra as a string; booleans and numbers are parsed here.

Invariant: credentials live only in :attr:`ComfyUISettings.auth_headers`, a mapping whose ``repr``
shows header names, never values; ``base_url`` never holds user info.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from airflow_comfy.protocol.answers import MAX_JSON_BYTES
from airflow_comfy.protocol.urls import build_base_url

__all__ = ["MAX_JSON_BYTES", "ComfyUISettings", "SecretHeaders", "settings_from_connection"]

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


class ConnectionLike(Protocol):
    """The fields of ``airflow.sdk.Connection`` this module reads."""

    conn_id: str
    host: str | None
    port: int | None
    schema: str | None
    login: str | None
    password: str | None

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


class SecretHeaders(Mapping[str, str]):
    """Read-only headers whose values never show up in ``repr``/``str``."""

    def __init__(self, headers: Mapping[str, str] | None = None) -> None:
        self._headers = dict(headers or {})

    def __getitem__(self, key: str) -> str:
        return self._headers[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)

    def __repr__(self) -> str:
        return f"SecretHeaders({sorted(self._headers)})"

    __str__ = __repr__

    def scrub(self, text: str) -> str:
        """``text`` with every credential of these headers replaced by ``***``."""
        for secret in sorted(self.secret_values(), key=len, reverse=True):
            if secret:
                text = text.replace(secret, "***")
        return text

    def secret_values(self) -> list[str]:
        """Every value worth masking: whole header values and the credential inside them."""
        values: list[str] = []
        for value in self._headers.values():
            values.append(value)
            scheme, _, credential = value.partition(" ")
            if credential and scheme.lower() in ("bearer", "basic", "token"):
                values.append(credential)
            if credential and scheme.lower() == "basic":
                try:
                    _login, _, password = base64.b64decode(credential).decode("utf-8").partition(":")
                except ValueError:
                    password = ""
                if password:
                    values.append(password)
        return values


@dataclass(frozen=True)
class ComfyUISettings:
    """Everything a client needs to talk to one ComfyUI server."""

    conn_id: str
    base_url: str
    auth_headers: SecretHeaders = field(default_factory=SecretHeaders, repr=False)
    verify: bool | str = True
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_retries: int = 5
    retry_min_wait: float = 0.5
    retry_max_wait: float = 10.0
    max_ws_frame_bytes: int = 128 * 1024 * 1024
    max_download_bytes: int = 16 * 1024 * 1024 * 1024
    #: Every server of the connection (``host`` first, then ``extra.hosts``); ``base_url`` is one of them.
    servers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.servers:
            object.__setattr__(self, "servers", (self.base_url,))
        elif self.base_url not in self.servers:
            raise ValueError(f"{self.base_url} is not one of the servers of connection {self.conn_id!r}")

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)

    @property
    def is_pool(self) -> bool:
        """True when the connection names more than one server."""
        return len(self.servers) > 1

    def for_server(self, server: str) -> ComfyUISettings:
        """The same settings (auth, TLS, timeouts) pinned to ``server``, which must be in the pool."""
        wanted = server.rstrip("/")
        if wanted not in self.servers:
            known = ", ".join(self.servers)
            raise ValueError(f"{wanted} is not a server of connection {self.conn_id!r} (servers: {known})")
        return replace(self, base_url=wanted)


def parse_bool(value: Any, *, name: str, default: bool) -> bool:
    """A boolean from JSON (``true``) or URI-form text (``"false"``, ``"0"``, ``"yes"``)."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if not text:  # an empty URI-form value means "not set", never "false"
        return default
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"extra.{name} must be true or false, got {value!r}")


def _parse_float(value: Any, *, name: str, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"extra.{name} must be a number of seconds, got {value!r}") from None
    if number <= 0:
        raise ValueError(f"extra.{name} must be positive, got {value!r}")
    return number


def _parse_count(value: Any, *, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"extra.{name} must be a whole number, got {value!r}") from None
    if number < 0:
        raise ValueError(f"extra.{name} must not be negative, got {value!r}")
    return number


def _parse_verify(value: Any) -> bool | str:
    """``true``/``false`` (or their URI-form spellings), or the path of a CA bundle that exists here.

    A value that is neither is an error rather than a path: ``verify: "maybe"`` must not be
    accepted as a bundle named ``maybe`` and then silently do nothing over http.
    """
    if value is None or isinstance(value, bool):
        return True if value is None else value
    text = str(value).strip()
    if not text:  # empty means "not set": keep TLS verification on
        return True
    if text.lower() in _TRUE | _FALSE:
        return parse_bool(text, name="verify", default=True)
    if os.path.isfile(text) or os.path.isdir(text):  # a CA bundle, or a c_rehash'ed folder of them
        return text
    raise ValueError(
        f"extra.verify must be true, false or the path of an existing CA bundle file, got {value!r}"
        " (no such file on this machine)"
    )


def _parse_headers(value: Any) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("extra.headers must be a JSON object of header names to values") from None
    if not isinstance(value, Mapping):
        raise ValueError("extra.headers must be an object of header names to values")
    return {str(k): str(v) for k, v in value.items()}


def settings_from_connection(conn: ConnectionLike) -> ComfyUISettings:
    """Build the settings of ``conn``; raises ``ValueError`` naming the connection and the bad field."""
    try:
        return _settings_from_connection(conn)
    except ValueError as err:
        raise ValueError(f"Connection {conn.conn_id!r}: {err}") from None


def _parse_hosts(value: Any) -> list[str]:
    """``extra.hosts``: a JSON list, JSON text of a list, or comma-separated text (URI form)."""
    if value in (None, ""):
        return []
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else text.split(",")
    if not isinstance(value, list | tuple):
        raise ValueError("extra.hosts must be a list of host names or URLs")
    return [str(item).strip() for item in value if str(item).strip()]


def _url_credentials(hosts: list[str]) -> tuple[str, str] | None:
    """The ``user:password`` written into the host URLs (percent-decoded), the same for all, or None."""
    found: set[tuple[str, str]] = set()
    for host in hosts:
        netloc = urlsplit(host if "://" in host else "//" + host).netloc
        if "@" not in netloc:
            continue
        login, sep, password = netloc.rsplit("@", 1)[0].partition(":")
        if not (login and sep and password):
            raise ValueError(
                "a host URL holds a user name without a password: put the credentials in the "
                "connection's login and password fields instead"
            )
        found.add((unquote(login), unquote(password)))
    if len(found) > 1:
        raise ValueError(
            "the host URLs hold different credentials, but all servers of a connection share one: "
            "put them in the connection's login and password fields instead"
        )
    return found.pop() if found else None


def _settings_from_connection(conn: ConnectionLike) -> ComfyUISettings:
    extra = dict(conn.extra_dejson or {})
    use_ssl = parse_bool(extra.get("use_ssl"), name="use_ssl", default=False)
    hosts = ([conn.host] if conn.host else []) + _parse_hosts(extra.get("hosts"))
    if not hosts:
        hosts = [""]  # build_base_url explains that a host is needed
    servers: list[str] = []
    for host in hosts:
        url = build_base_url(
            host,
            port=conn.port if "://" not in host and ":" not in host else None,
            schema=conn.schema or None,
            use_ssl=use_ssl,
            path_prefix=extra.get("path_prefix") or None,
        )
        if url not in servers:
            servers.append(url)
    base_url = servers[0]
    headers = _parse_headers(extra.get("headers"))
    token = extra.get("token")
    login, password = conn.login, conn.password
    in_url = _url_credentials(hosts)
    if in_url is not None:
        if (login or password) and (login, password) != in_url:
            raise ValueError(
                "the host URL holds credentials that differ from the login and password fields: "
                "keep them in one place (the login and password fields)"
            )
        login, password = in_url
    # An explicit Authorization in extra.headers wins, whatever its spelling (headers are case-insensitive).
    has_auth = any(name.lower() == "authorization" for name in headers)
    if not has_auth and login and password:
        basic = base64.b64encode(f"{login}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    elif not has_auth and (token or password):
        headers["Authorization"] = f"Bearer {token or password}"
    return ComfyUISettings(
        conn_id=conn.conn_id,
        base_url=base_url,
        auth_headers=SecretHeaders(headers),
        verify=_parse_verify(extra.get("verify")),
        connect_timeout=_parse_float(extra.get("connect_timeout"), name="connect_timeout", default=10.0),
        read_timeout=_parse_float(extra.get("read_timeout"), name="read_timeout", default=60.0),
        max_retries=_parse_count(extra.get("max_retries"), name="max_retries", default=5),
        retry_min_wait=_parse_float(extra.get("retry_min_wait"), name="retry_min_wait", default=0.5),
        retry_max_wait=_parse_float(extra.get("retry_max_wait"), name="retry_max_wait", default=10.0),
        max_ws_frame_bytes=_parse_size(extra.get("max_ws_frame_bytes"), "max_ws_frame_bytes", 128 << 20),
        max_download_bytes=_parse_size(extra.get("max_download_bytes"), "max_download_bytes", 16 << 30),
        servers=tuple(servers),
    )


def _parse_size(value: Any, name: str, default: int) -> int:
    size = _parse_count(value, name=name, default=default)
    if size <= 0:
        raise ValueError(f"extra.{name} must be a positive number of bytes, got {value!r}")
    return size
