"""The synchronous HTTP transport of one server: a ``requests`` session, retries, error mapping, flows.

Every request goes through :meth:`Transport.request`, which adds the connection's auth headers and
TLS settings, retries what the one policy of :mod:`airflow_comfy.hooks.retry` allows, and turns
every failure into an exception of :mod:`airflow_comfy.exceptions` whose message names the method
and the (redacted) URL and says what to check. :meth:`Transport.run` drives the request flows of
:mod:`airflow_comfy.protocol.flows`.

Invariants: no URL with credentials, no header value and no full response body ever reaches a log
line or an exception message (excerpts are scrubbed of the connection's credentials, which a
proxy's error page may echo back); JSON answers are read with the bound of
:mod:`airflow_comfy.protocol.answers`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import requests
from tenacity import Retrying

from airflow_comfy.exceptions import ComfyUIError
from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.hooks.retry import retry_kwargs
from airflow_comfy.protocol import errors
from airflow_comfy.protocol.answers import EXCERPT, MAX_JSON_BYTES, BoundedBody, decode_json, expect_object
from airflow_comfy.protocol.flows import Answer, Call, Fanout, Flow, Note, Pause
from airflow_comfy.protocol.urls import endpoint, redact_url

log = logging.getLogger(__name__)
T = TypeVar("T")


class Transport:
    """HTTP calls to one ComfyUI server with the settings of one connection."""

    def __init__(self, settings: ComfyUISettings, *, max_json_bytes: int = MAX_JSON_BYTES) -> None:
        self.settings = settings
        self.max_json_bytes = max_json_bytes
        self._session: requests.Session | None = None

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            session.headers.update(self.settings.auth_headers)
            session.verify = self.settings.verify
            # The environment's proxies (HTTP(S)_PROXY, NO_PROXY) and CA bundle are read once here,
            # not on every request as trust_env does (a batch makes thousands); ~/.netrc is not used:
            # credentials come from the connection.
            session.trust_env = False
            session.proxies.update(requests.utils.get_environ_proxies(self.settings.base_url))
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if self.settings.verify is True and bundle:
                session.verify = bundle
            self._session = session
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def url(self, path: str) -> str:
        return endpoint(self.settings.base_url, path)

    def scrub(self, text: str) -> str:
        """``text`` with every credential of the connection replaced by ``***``."""
        return self.settings.auth_headers.scrub(text)

    # --- flows --------------------------------------------------------------------------------------

    def run(self, flow: Flow[T]) -> T:
        """Drive a flow of :mod:`airflow_comfy.protocol.flows` to its result."""
        reply: Any = None
        failure: ComfyUIError | None = None
        while True:
            try:
                step = flow.throw(failure) if failure is not None else flow.send(reply)
            except StopIteration as stop:
                return stop.value
            reply, failure = None, None
            if isinstance(step, Pause):
                time.sleep(step.seconds)
            elif isinstance(step, Fanout):
                reply = [self._answer_or_error(call) for call in step.calls]
            elif isinstance(step, Note):
                log.log(logging.WARNING if step.level == "warning" else logging.INFO, "%s", step.message)
            else:
                try:
                    reply = self.call(step)
                except ComfyUIError as exc:
                    failure = exc

    def _answer_or_error(self, call: Call) -> Answer | ComfyUIError:
        try:
            return self.call(call)
        except ComfyUIError as exc:
            return exc

    def call(self, call: Call) -> Answer:
        """Send one :class:`Call` and decode its answer as it asks."""
        response = self.request(
            call.method,
            call.path,
            params=call.params,
            json_body=call.json,
            headers=call.headers,
            stream=True,
            retries=None if call.retry else 0,
            resend_safe_only=call.resend_safe_only,
            allow_status=call.allow_status,
        )
        if call.expect == "none":
            response.close()
            return Answer(response.status_code, None)
        body = self._read_json(call.method, call.path, response)
        if call.expect == "object" and response.status_code < 400:
            body = expect_object(body, method=call.method, shown_url=redact_url(self.url(call.path)))
        return Answer(response.status_code, body)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and decode its JSON body (``None`` for an empty 200 body)."""
        return self._read_json(method, path, self.request(method, path, stream=True, **kwargs))

    def json_object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """Send a request whose answer must be a JSON object."""
        return expect_object(
            self.json(method, path, **kwargs), method=method, shown_url=redact_url(self.url(path))
        )

    # --- requests -----------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        data: Any = None,
        files: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        retries: int | None = None,
        resend_safe_only: bool = False,
        retry_if: Callable[[BaseException], bool] | None = None,
        timeout: tuple[float, float] | None = None,
        allow_status: frozenset[int] = frozenset(),
    ) -> requests.Response:
        """Send one request (retrying transient failures) and return a 2xx response.

        A status in ``allow_status`` (e.g. 400 for POST /prompt) is returned instead of raised.
        """
        url = self.url(path)
        shown = redact_url(url)
        policy = retry_kwargs(
            self.settings,
            f"{method} {shown}",
            retries=retries,
            resend_safe_only=resend_safe_only,
            retry_if=retry_if,
        )
        return Retrying(**policy)(
            self._send,
            method,
            url,
            shown,
            params=params,
            json_body=json_body,
            data=data,
            files=files,
            headers=headers,
            stream=stream,
            timeout=timeout or self.settings.timeout,
            allow_status=allow_status,
        )

    def _send(
        self,
        method: str,
        url: str,
        shown: str,
        *,
        params: Mapping[str, Any] | None,
        json_body: Any,
        data: Any,
        files: Any,
        headers: Mapping[str, str] | None,
        stream: bool,
        timeout: tuple[float, float],
        allow_status: frozenset[int],
    ) -> requests.Response:
        for value in (files or {}).values():
            handle = value[1] if isinstance(value, tuple) else value
            if hasattr(handle, "seek"):
                handle.seek(0)
        try:
            response = self.session.request(
                method,
                url,
                params=params,
                json=json_body,
                data=data,
                files=files,
                headers=dict(headers) if headers else None,
                stream=stream,
                timeout=timeout,
            )
        except requests.RequestException as exc:
            if isinstance(exc, requests.ConnectTimeout):
                failure: ComfyUIError = errors.timeout_error(method, shown, timeout[0])
            elif isinstance(exc, requests.Timeout):
                failure = errors.timeout_error(method, shown, timeout[1])
            else:
                failure = errors.connection_error(method, shown, _reason(exc))
            # Whether the request can have reached the server: decides if resending a POST is safe.
            failure.never_sent = _never_sent(exc)
            raise failure from None
        if response.status_code >= 400 and response.status_code not in allow_status:
            excerpt = self.scrub(_excerpt(response))
            response.close()
            refused = errors.http_status_error(method, shown, response.status_code, excerpt)
            # 429, 502 and 503 mean the request was not handled; 500 and 504 may hide a handled one.
            refused.never_sent = response.status_code in (429, 502, 503)
            raise refused
        return response

    def read_bounded(self, method: str, path: str, response: requests.Response) -> bytearray:
        """The whole body of a streamed response, at most ``max_json_bytes``; the response is closed."""
        shown = redact_url(self.url(path))
        try:
            body = BoundedBody(self.max_json_bytes, method, shown, response.headers.get("Content-Length"))
            for chunk in response.iter_content(chunk_size=1024 * 1024):
                body.add(chunk)
        except requests.RequestException as exc:
            raise errors.connection_error(method, shown, _reason(exc)) from None
        finally:
            response.close()
        return body.data

    def _read_json(self, method: str, path: str, response: requests.Response) -> Any:
        shown = redact_url(self.url(path))
        return decode_json(
            self.read_bounded(method, path, response),
            method=method,
            shown_url=shown,
            status=response.status_code,
            content_type=response.headers.get("Content-Type", ""),
            scrub=self.scrub,
        )


def _never_sent(exc: BaseException) -> bool:
    """True when ``exc`` happened before the request left (refused, DNS, connect timeout).

    requests wraps urllib3's cause in its message ("Caused by NewConnectionError(...)").
    """
    if isinstance(exc, requests.ConnectTimeout):
        return True
    text = str(exc)
    return any(
        marker in text for marker in ("NewConnectionError", "NameResolutionError", "Connection refused")
    )


def _excerpt(response: requests.Response) -> str:
    try:  # a little more than shown, so that a credential cut at the end is still scrubbed whole
        raw = response.raw.read(EXCERPT + 512, decode_content=True) if response.raw else b""
    except Exception:  # a broken body must not hide the status
        raw = b""
    return (raw or b"").decode("utf-8", "replace")


def _reason(exc: BaseException) -> str:
    """The innermost message of a requests/urllib3 error, without URLs that may carry credentials."""
    inner: BaseException = exc
    while inner.__context__ is not None and inner.__context__ is not inner:
        inner = inner.__context__
        if isinstance(inner, OSError) and inner.strerror:
            return inner.strerror
    text = str(exc)
    for marker in ("Errno", "Connection refused", "Name or service not known", "certificate"):
        if marker in text:
            start = text.find(marker)
            return text[start : start + 160]
    return type(exc).__name__


__all__ = ["MAX_JSON_BYTES", "Transport"]
