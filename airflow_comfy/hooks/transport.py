"""The synchronous HTTP transport of the hook: one ``requests`` session, retries, error mapping.

Every request goes through :meth:`Transport.request`, which
- adds the connection's auth headers and TLS settings,
- retries with exponential backoff (tenacity) only what can succeed on retry: connection errors,
  timeouts, 5xx and 429 — never 400/401/403/404 — at most ``max_retries`` more times,
- turns every failure into an exception of :mod:`airflow_comfy.exceptions` whose message names
  the method and the URL (redacted) and says what to check.

Invariants: no URL with credentials, no header value and no full response body ever reaches a log
line or an exception message (body excerpts are scrubbed of the connection's credentials, which a
proxy's error page may echo back); JSON answers larger than ``max_json_bytes`` are refused rather
than read into memory (a compressed answer is measured decompressed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from airflow_comfy.exceptions import ComfyUIError, ComfyUIResponseError
from airflow_comfy.hooks.connection import MAX_JSON_BYTES, ComfyUISettings
from airflow_comfy.protocol import errors
from airflow_comfy.protocol.urls import endpoint, redact_url

log = logging.getLogger(__name__)

# ComfyUI's largest JSON answer is /object_info (a few MB, tens with many custom nodes); a status read
# is kilobytes. Reading is bounded by this, so a broken or hostile server cannot exhaust memory.
_EXCERPT = 300


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
            session.trust_env = True
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

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        data: Any = None,
        files: Any = None,
        stream: bool = False,
        retries: int | None = None,
        retry_if: Callable[[BaseException], bool] | None = None,
        before_retry: Callable[[BaseException], None] | None = None,
        timeout: tuple[float, float] | None = None,
        allow_status: frozenset[int] = frozenset(),
    ) -> requests.Response:
        """Send one request (retrying transient failures) and return a 2xx response.

        A status in ``allow_status`` (e.g. 400 for POST /prompt) is returned instead of raised.
        ``retry_if`` narrows which retryable errors are retried; ``before_retry`` runs before each
        new attempt (used by submit to check whether the previous attempt reached the server).
        """
        url = self.url(path)
        shown = redact_url(url)
        attempts = 1 + (self.settings.max_retries if retries is None else retries)

        def should_retry(exc: BaseException) -> bool:
            return errors.is_retryable(exc) and (retry_if is None or retry_if(exc))

        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "ComfyUI %s %s failed (attempt %d of %d), retrying: %s",
                method,
                shown,
                state.attempt_number,
                attempts,
                exc,
            )
            if before_retry is not None and exc is not None:
                before_retry(exc)

        retrying = Retrying(
            retry=retry_if_exception(should_retry),
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=self.settings.retry_min_wait, max=self.settings.retry_max_wait)
            + wait_random(0, self.settings.retry_min_wait / 5),
            before_sleep=log_retry,
            reraise=True,
        )
        return retrying(
            self._send,
            method,
            url,
            shown,
            params=params,
            json_body=json_body,
            data=data,
            files=files,
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
        stream: bool,
        timeout: tuple[float, float],
        allow_status: frozenset[int],
    ) -> requests.Response:
        if files is not None:
            for value in files.values():
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
                stream=stream,
                timeout=timeout,
            )
        except requests.RequestException as exc:
            if isinstance(exc, requests.Timeout) and not isinstance(exc, requests.ConnectTimeout):
                failure: ComfyUIError = errors.timeout_error(method, shown, timeout[1])
            elif isinstance(exc, requests.ConnectTimeout):
                failure = errors.timeout_error(method, shown, timeout[0])
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

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and decode its JSON body (``None`` for an empty 200 body)."""
        return self.json_answer(method, path, **kwargs)[1]

    def json_answer(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """Send a request; return its status and decoded JSON body, read with the size bound.

        A non-JSON body is an HTTP error for a status in ``allow_status`` (a proxy's error page),
        and a :class:`ComfyUIResponseError` for a 2xx; excerpts are scrubbed of credentials.
        """
        response = self.request(method, path, stream=True, **kwargs)
        shown = redact_url(self.url(path))
        try:
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > self.max_json_bytes:
                raise ComfyUIResponseError(
                    f"ComfyUI {method} {shown} answered {declared} bytes, more than the "
                    f"{self.max_json_bytes} bytes a JSON answer may have",
                    url=shown,
                )
            body = _read_limited(response, self.max_json_bytes, method, shown)
        finally:
            response.close()
        if not body.strip():
            return response.status_code, None
        try:
            return response.status_code, json.loads(body)
        except RecursionError:
            nested = True
        except ValueError:  # raised below, outside this block: the decode error holds the whole body
            nested = False
        if nested:
            raise ComfyUIResponseError(f"ComfyUI {method} {shown} answered JSON nested too deeply", url=shown)
        excerpt = self.scrub(body[: _EXCERPT + 512].decode("utf-8", "replace"))[:_EXCERPT]
        if response.status_code >= 400:
            raise errors.http_status_error(method, shown, response.status_code, excerpt)
        raise errors.not_json_error(method, shown, response.headers.get("Content-Type", ""), excerpt)


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


def _read_limited(response: requests.Response, limit: int, method: str, shown: str) -> bytearray:
    body = bytearray()  # grown in place: no second copy of the whole body at the end
    try:
        for chunk in response.iter_content(chunk_size=1024 * 1024):
            if len(body) + len(chunk) > limit:
                raise ComfyUIResponseError(
                    f"ComfyUI {method} {shown} answered more than {limit} bytes; refusing to read it "
                    "(is this URL a ComfyUI server?)",
                    url=shown,
                )
            body += chunk
    except requests.RequestException as exc:
        raise errors.connection_error(method, shown, _reason(exc)) from None
    return body


def _excerpt(response: requests.Response) -> str:
    try:  # a little more than shown, so that a credential cut at the end is still scrubbed whole
        raw = response.raw.read(_EXCERPT + 512, decode_content=True) if response.raw else b""
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


__all__ = ["MAX_JSON_BYTES", "ComfyUIError", "Transport"]
