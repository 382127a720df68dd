"""The one retry policy of every request, sync (``tenacity.Retrying``) and async (``AsyncRetrying``).

Invariant: only what can succeed on retry is retried (connection errors, timeouts, 5xx, 429:
:func:`airflow_comfy.protocol.errors.is_retryable`), at most ``settings.max_retries`` more times,
with exponential backoff from ``retry_min_wait`` to ``retry_max_wait`` plus a little jitter; a
request that must not be resent once it may have arrived (``POST /prompt``) is retried only for
failures that cannot have reached the server (``ComfyUIError.never_sent``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from tenacity import RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.protocol import errors

log = logging.getLogger(__name__)


def retry_kwargs(
    settings: ComfyUISettings,
    what: str,
    *,
    retries: int | None = None,
    resend_safe_only: bool = False,
    retry_if: Callable[[BaseException], bool] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``Retrying``/``AsyncRetrying``; ``what`` names the request in log lines."""
    attempts = 1 + (settings.max_retries if retries is None else retries)

    def should_retry(exc: BaseException) -> bool:
        if not errors.is_retryable(exc) or (resend_safe_only and not getattr(exc, "never_sent", False)):
            return False
        return retry_if is None or retry_if(exc)

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "ComfyUI %s failed (attempt %d of %d), retrying: %s", what, state.attempt_number, attempts, exc
        )

    return {
        "retry": retry_if_exception(should_retry),
        "stop": stop_after_attempt(attempts),
        "wait": wait_exponential(multiplier=settings.retry_min_wait, max=settings.retry_max_wait)
        + wait_random(0, settings.retry_min_wait / 5),
        "before_sleep": log_retry,
        "reraise": True,
    }
