"""Turning ComfyUI's error answers into messages a person can act on, and into exceptions.

Formats (ComfyUI 0.3.64):
- POST /prompt 400: ``{"error": {type, message, details, extra_info}, "node_errors": {id: {"errors":
  [{type, message, details, extra_info: {input_name?}}], "class_type", "dependent_outputs"}}}``.
  ``error.details`` only covers the output node itself, so every ``node_errors`` entry is listed.
- ``execution_error``: ``{prompt_id, node_id, node_type, executed, exception_message,
  exception_type, traceback, current_inputs, current_outputs}``.
- ``execution_interrupted``: ``{prompt_id, node_id, node_type, executed}``.

Invariant: one line per node problem, always of the form
``node <id> (<class_type>): <input>: <message> — <details>`` (input and details omitted when
ComfyUI gives none), so the server's rejections and the local pre-submit validation read alike;
where ComfyUI's wording is a raw Python exception (a link to a missing node or output slot), a
short explanation in parentheses follows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from airflow_comfy.exceptions import (
    ComfyUIAuthError,
    ComfyUIConnectionError,
    ComfyUIError,
    ComfyUIExecutionError,
    ComfyUIHTTPError,
    ComfyUIInterruptedError,
    ComfyUIPromptLostError,
    ComfyUIResponseError,
    ComfyUITimeoutError,
    ComfyUIValidationError,
)
from airflow_comfy.protocol.outputs import OutputRef
from airflow_comfy.protocol.states import PromptState, PromptStatus

TRACEBACK_TAIL = 3


def node_error_lines(node_errors: Mapping[str, Any]) -> list[str]:
    """One line per error of every node, sorted by node id (numeric ids numerically)."""
    lines: list[str] = []
    for node_id in sorted(node_errors, key=_node_sort_key):
        entry = node_errors[node_id] or {}
        class_type = entry.get("class_type") or "?"
        for err in entry.get("errors") or []:
            extra = err.get("extra_info") or {}
            input_name = extra.get("input_name")
            text = f"node {node_id} ({class_type}): "
            if input_name:
                text += f"{input_name}: "
            text += str(err.get("message") or err.get("type") or "invalid")
            details = err.get("details")
            if details:
                text += f" — {details}"
            if err.get("type") == "value_not_in_list" and _looks_like_model(extra.get("received_value")):
                text += " (this model file is not installed on that ComfyUI server)"
            text += _explain_link_exception(node_id, err)
            lines.append(text)
    return lines


_LINK_EXCEPTIONS = ("exception_during_validation", "exception_during_inner_validation")
_MISSING_KEY = re.compile(r"^'(?P<key>[^']+)'$")


def _explain_link_exception(node_id: str, err: Mapping[str, Any]) -> str:
    """What ComfyUI's raw ``KeyError``/``IndexError`` during validation means, or ``""``.

    ComfyUI looks linked nodes up with ``prompt[linked_id]`` and their outputs with
    ``RETURN_TYPES[slot]``: a link to a node that is not in the workflow surfaces as the bare
    ``KeyError`` text ``'9'``, a link to a missing output slot as ``tuple index out of range``
    (transcripts ``prompt_err_link_nonexistent_node`` and ``prompt_err_link_bad_slot``). Either
    way it is node ``node_id``'s own links that are wrong: in the inner variant the error is
    reported on the node whose validation raised, under the input of its downstream node.
    """
    if err.get("type") not in _LINK_EXCEPTIONS:
        return ""
    extra = err.get("extra_info") or {}
    exc_type = str(extra.get("exception_type") or "").rsplit(".", 1)[-1]
    details = str(err.get("details") or "").strip()
    missing = _MISSING_KEY.match(details)
    if exc_type in ("KeyError", "") and missing and missing["key"] not in ("class_type", "inputs"):
        return f" (node {missing['key']} does not exist in the workflow; node {node_id} links to it)"
    if exc_type in ("IndexError", "") and details == "tuple index out of range":
        return f" (node {node_id} links to an output slot that its source node does not have)"
    return ""


_MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx", ".pkl")


def _looks_like_model(value: Any) -> bool:
    return isinstance(value, str) and value.lower().endswith(_MODEL_SUFFIXES)


def format_validation_error(body: Mapping[str, Any]) -> str:
    """The message of a rejected prompt: the top-level error, then every node's problems."""
    error = body.get("error") if isinstance(body.get("error"), Mapping) else {}
    if isinstance(body.get("error"), str):
        error = {"message": body["error"]}
    head = str(error.get("message") or "ComfyUI rejected the workflow")
    if error.get("type"):
        head += f" [{error['type']}]"
    lines = node_error_lines(body.get("node_errors") or {})
    details = error.get("details")
    if details and not lines:
        head += f": {details}"
    return "\n".join([head, *(f"  - {line}" for line in lines)])


def validation_error(body: Mapping[str, Any]) -> ComfyUIValidationError:
    """The exception for a 400 body of POST /prompt (or an equivalent local result)."""
    error = body.get("error")
    if not isinstance(error, Mapping):
        error = {"type": "unknown", "message": str(error or ""), "details": "", "extra_info": {}}
    return ComfyUIValidationError(
        format_validation_error(body), error=dict(error), node_errors=dict(body.get("node_errors") or {})
    )


def format_execution_error(prompt_id: str, failure: Mapping[str, Any]) -> str:
    """``Prompt X failed in node 2 (ImageBlur): RuntimeError: ...`` plus the traceback tail."""
    where = _where(failure)
    exc_type = failure.get("exception_type") or "Error"
    message = str(failure.get("exception_message") or "").strip()
    text = f"ComfyUI prompt {prompt_id} failed{where}: {exc_type}: {message}".rstrip(": ")
    tail = [str(line).rstrip() for line in (failure.get("traceback") or [])][-TRACEBACK_TAIL:]
    if tail:
        text += "\nTraceback (last frames on the server):\n" + "\n".join(tail)
    return text


def format_interrupted(prompt_id: str, failure: Mapping[str, Any]) -> str:
    executed = failure.get("executed") or []
    return (
        f"ComfyUI prompt {prompt_id} was interrupted{_where(failure)} after {len(executed)} node(s) ran. "
        "ComfyUI does not record who interrupted it (a user in the web UI, another client, or a cancel)."
    )


def error_for_status(status: PromptStatus) -> ComfyUIError | None:
    """The exception for a failed terminal status, ``None`` for success or non-terminal states."""
    failure = dict(status.failure or {})
    if status.state is PromptState.ERROR:
        return ComfyUIExecutionError(
            format_execution_error(status.prompt_id, failure), prompt_id=status.prompt_id, details=failure
        )
    if status.state is PromptState.INTERRUPTED:
        return ComfyUIInterruptedError(
            format_interrupted(status.prompt_id, failure), prompt_id=status.prompt_id, details=failure
        )
    return None


def _where(failure: Mapping[str, Any]) -> str:
    node_id, node_type = failure.get("node_id"), failure.get("node_type")
    if node_id is None:
        return ""
    return f" in node {node_id} ({node_type or '?'})"


def _node_sort_key(node_id: str) -> tuple[int, int, str]:
    return (0, int(node_id), "") if str(node_id).isdigit() else (1, 0, str(node_id))


# --- transport and HTTP errors, shared by the sync hook and the async trigger ---------------------

_STATUS_HINTS = {
    400: "the server rejected the request",
    401: "the credentials were refused: check login/password/token of the connection "
    "(or the proxy in front of ComfyUI)",
    403: "access is forbidden: check the credentials, and that no proxy or Origin check blocks the client",
    404: "no such endpoint or file: check that the URL points at ComfyUI and that the path prefix is right",
    405: "method not allowed: check that the URL points at ComfyUI and not at another service",
    413: "the request body is too large for the server (ComfyUI's --max-upload-size, or a proxy limit)",
    429: "the server is rate limiting: retried with backoff",
    500: "ComfyUI failed while handling the request (it answers 500 to bodies it cannot parse)",
    502: "a proxy in front of ComfyUI could not reach it: is ComfyUI running?",
    503: "the server is unavailable: is ComfyUI starting or overloaded?",
    504: "a proxy in front of ComfyUI timed out waiting for it",
}


def is_retryable_status(status: int) -> bool:
    """429 and 5xx may succeed on retry; other statuses will not."""
    return status == 429 or 500 <= status <= 599


def is_retryable(exc: BaseException) -> bool:
    """Whether a request that raised ``exc`` is worth sending again."""
    if isinstance(exc, ComfyUIConnectionError | ComfyUITimeoutError):
        return True
    return isinstance(exc, ComfyUIHTTPError) and is_retryable_status(exc.status_code)


def http_status_error(method: str, url: str, status: int, body_excerpt: str = "") -> ComfyUIHTTPError:
    """The exception for an unexpected HTTP status; ``url`` must already be redacted."""
    hint = _STATUS_HINTS.get(status) or ("server error" if status >= 500 else "unexpected status")
    message = f"ComfyUI {method} {url} answered HTTP {status}: {hint}"
    excerpt = body_excerpt.strip()
    if excerpt:
        message += f" (body: {excerpt[:200]!r})"
    cls = ComfyUIAuthError if status in (401, 403) else ComfyUIHTTPError
    return cls(message, url=url, status_code=status, body_excerpt=excerpt[:500])


#: What ComfyUI 0.3.64's ``GET /view`` means by a status: the file is the problem, not the credentials.
_VIEW_HINTS = {
    400: "ComfyUI will not serve that name or type (a filename starting with '/' or holding '..', "
    "or an unknown type)",
    403: "ComfyUI refused the file because its subfolder points outside the server's folders "
    "(not a credentials problem: every other request of the task was accepted)",
    404: "no such file on the server: it was deleted or moved since the prompt ran",
}


def download_error(ref: OutputRef, exc: ComfyUIError) -> ComfyUIError:
    """``exc`` (a failed ``GET /view``) with a message naming the output it was for.

    Credentials are blamed only for a 401: a 403 on ``/view`` is ComfyUI refusing a path (see
    ``_VIEW_HINTS``), so it becomes a :class:`ComfyUIHTTPError`, not a :class:`ComfyUIAuthError`.
    """
    what = (
        f"Could not download the output of node {ref.node_id or '?'} (filename {ref.filename!r}, "
        f"subfolder {ref.subfolder!r}, type {ref.type!r})"
    )
    if isinstance(exc, ComfyUIHTTPError) and exc.status_code in _VIEW_HINTS:
        return ComfyUIHTTPError(
            f"{what}: GET {exc.url} answered HTTP {exc.status_code}: {_VIEW_HINTS[exc.status_code]}",
            url=exc.url,
            status_code=exc.status_code,
            body_excerpt=exc.body_excerpt,
        )
    cls = type(exc)
    error = cls.__new__(cls)
    error.__dict__.update(vars(exc))
    error.args = (f"{what}: {exc}",)
    return error


def connection_error(method: str, url: str, reason: str) -> ComfyUIConnectionError:
    """The exception for a request that never got an answer; ``url`` must already be redacted."""
    text = reason.lower()
    if "certificate" in text or "ssl" in text:
        hint = "TLS failed: set extra.verify to a CA bundle path (or false for a test server)"
    elif any(
        marker in text
        for marker in (
            "name or service not known",
            "nodename",
            "getaddrinfo",
            "name resolution",
            "no address associated",
            "failed to resolve",
        )
    ):
        hint = "the host name does not resolve: check the connection's host"
    elif "refused" in text:
        hint = "connection refused: is ComfyUI running, and are host and port right?"
    else:
        hint = "check that ComfyUI is running and reachable from this machine"
    return ComfyUIConnectionError(
        f"Cannot reach ComfyUI for {method} {url}: {hint} ({reason[:200]})", url=url
    )


def timeout_error(method: str, url: str, seconds: float | None) -> ComfyUITimeoutError:
    bound = f" within {seconds:g} s" if seconds else ""
    return ComfyUITimeoutError(
        f"ComfyUI did not answer {method} {url}{bound}: the server is overloaded or unreachable "
        "(raise extra.read_timeout for slow endpoints such as /object_info)"
    )


def wait_timeout_error(prompt_id: str, base_url: str, seconds: float | None) -> ComfyUITimeoutError:
    """The wait's deadline passed; ``seconds`` is the timeout when known (else: the task's deadline)."""
    within = f"within {seconds:g} s" if seconds else "before the task's deadline"
    return ComfyUITimeoutError(
        f"ComfyUI prompt {prompt_id} on {base_url} did not finish {within}: raise the "
        "timeout, or check the server's queue (a long queue or a stuck node)"
    )


def prompt_lost_error(prompt_id: str, base_url: str, hint: str = "") -> ComfyUIPromptLostError:
    """A prompt in neither history nor queue (after the caller's grace period): the server lost it."""
    message = (
        f"ComfyUI prompt {prompt_id} is in neither the history nor the queue of {base_url}: the server "
        "restarted or its history was cleared, and the result is lost"
    )
    return ComfyUIPromptLostError(f"{message}; {hint}" if hint else f"{message}.", prompt_id=prompt_id)


def not_json_error(
    method: str, url: str, content_type: str, excerpt: str, *, received: str = ""
) -> ComfyUIResponseError:
    """A 2xx answer that is not JSON; ``received`` says what it was (``protocol.answers.describe_body``)."""
    what = received or (content_type or "no content type")
    return ComfyUIResponseError(
        f"ComfyUI {method} {url} answered {what} where JSON was expected: "
        "is this URL a ComfyUI server and not a login page or another service? "
        f"(body starts {excerpt[:120]!r})",
        url=url,
        body_excerpt=excerpt[:500],
    )
