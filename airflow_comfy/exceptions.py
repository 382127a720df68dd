"""Every error airflow-comfy raises, in one flat hierarchy.

All of them derive from :class:`ComfyUIError`, so ``except ComfyUIError`` catches anything this
package raises on purpose. Each class answers one question a user has when a task fails: could
the server be reached, did it answer sensibly, did it accept the workflow, did the workflow run.

Invariant: no message, ``repr`` or attribute of these exceptions carries a password, token or
auth header. URLs are stored and shown already redacted (see ``protocol.urls.redact_url``);
response bodies are kept only as short excerpts.
"""

from __future__ import annotations

from typing import Any


class ComfyUIError(Exception):
    """Base class of every error raised by airflow-comfy."""

    #: True when the request that failed cannot have reached ComfyUI (refused connection, DNS,
    #: connect timeout, 429/502/503), so sending it again cannot start a second job.
    never_sent: bool = False


class ComfyUIConnectionError(ComfyUIError):
    """The server could not be reached: DNS failure, refused connection, TLS failure, reset."""

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class ComfyUITimeoutError(ComfyUIError):
    """A request, or a wait for a prompt, took longer than its bound."""


class ComfyUIHTTPError(ComfyUIError):
    """The server answered with an HTTP status that the call did not expect."""

    def __init__(self, message: str, *, url: str, status_code: int, body_excerpt: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code
        self.body_excerpt = body_excerpt


class ComfyUIAuthError(ComfyUIHTTPError):
    """401 or 403: the credentials (or a proxy in front of ComfyUI) refused the request."""


class ComfyUIResponseError(ComfyUIError):
    """The server answered 2xx but with a body that is not what ComfyUI sends (not JSON, wrong shape)."""

    def __init__(self, message: str, *, url: str = "", body_excerpt: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.body_excerpt = body_excerpt


class ComfyUIWorkflowError(ComfyUIError):
    """The workflow given to us is unusable before it reaches a server (not JSON, wrong format, ...)."""


class ComfyUIValidationError(ComfyUIError):
    """ComfyUI (or the local pre-submit check) rejected the workflow; retrying cannot help.

    ``error`` is the top-level ``{"type", "message", "details", "extra_info"}`` object and
    ``node_errors`` maps node ids to ``{"errors": [...], "class_type", "dependent_outputs"}``,
    both exactly as POST /prompt returns them with status 400.
    """

    def __init__(self, message: str, *, error: dict[str, Any], node_errors: dict[str, Any]) -> None:
        super().__init__(message)
        self.error = error
        self.node_errors = node_errors


class ComfyUIPromptFailedError(ComfyUIError):
    """Base of the two ways an accepted prompt can end without success."""

    def __init__(self, message: str, *, prompt_id: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.prompt_id = prompt_id
        self.details = details

    @property
    def node_id(self) -> str | None:
        return self.details.get("node_id")

    @property
    def node_type(self) -> str | None:
        return self.details.get("node_type")


class ComfyUIExecutionError(ComfyUIPromptFailedError):
    """A node raised while the prompt ran (``execution_error``)."""

    @property
    def exception_type(self) -> str | None:
        return self.details.get("exception_type")

    @property
    def exception_message(self) -> str | None:
        return self.details.get("exception_message")

    @property
    def traceback(self) -> list[str]:
        return list(self.details.get("traceback") or [])


class ComfyUIInterruptedError(ComfyUIPromptFailedError):
    """The prompt was interrupted (``execution_interrupted``); ComfyUI does not say by whom."""


class ComfyUIPromptLostError(ComfyUIError):
    """The prompt is in neither the history nor the queue: the server restarted or history was cleared."""

    def __init__(self, message: str, *, prompt_id: str) -> None:
        super().__init__(message)
        self.prompt_id = prompt_id


class ComfyUIBatchFailedError(ComfyUIError):
    """More items of a batch failed than its ``max_failed`` allows; ``counts`` has the batch's
    counts and manifest path (as the task's XCom would), ``errors`` the first failures."""

    def __init__(self, message: str, *, counts: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.counts = dict(counts or {})


__all__ = [
    "ComfyUIAuthError",
    "ComfyUIBatchFailedError",
    "ComfyUIConnectionError",
    "ComfyUIError",
    "ComfyUIExecutionError",
    "ComfyUIHTTPError",
    "ComfyUIInterruptedError",
    "ComfyUIPromptFailedError",
    "ComfyUIPromptLostError",
    "ComfyUIResponseError",
    "ComfyUITimeoutError",
    "ComfyUIValidationError",
    "ComfyUIWorkflowError",
]
