"""Reading a ComfyUI answer's body: bounded, decoded, and explained when it is not what ComfyUI sends.

Used by the sync transport and the async client alike (they differ only in how chunks arrive).

Invariants: a body is never read past ``limit`` bytes (a broken or hostile server cannot exhaust
memory); every message quotes at most a short, credential-scrubbed excerpt, and says what was
received (empty body, truncated JSON at byte N, an HTML page and its title, other text).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from airflow_comfy.exceptions import ComfyUIResponseError
from airflow_comfy.protocol import errors

#: The largest JSON answer a client reads: /object_info is a few MB (tens with many custom nodes).
MAX_JSON_BYTES = 64 * 1024 * 1024
EXCERPT = 300
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


class BoundedBody:
    """Collects a body chunk by chunk, refusing more than ``limit`` bytes."""

    def __init__(self, limit: int, method: str, shown_url: str, declared: str | None = None) -> None:
        self.limit, self.method, self.shown_url = limit, method, shown_url
        self.data = bytearray()  # grown in place: no second copy of the whole body at the end
        if declared and declared.isdigit() and int(declared) > limit:
            raise self._too_large(f"{int(declared)} bytes")

    def add(self, chunk: bytes) -> None:
        if len(self.data) + len(chunk) > self.limit:
            self.data = bytearray()  # refused: do not keep it alive through the exception's frames
            raise self._too_large(f"more than {self.limit} bytes")
        self.data += chunk

    def _too_large(self, size: str) -> ComfyUIResponseError:
        return ComfyUIResponseError(
            f"ComfyUI {self.method} {self.shown_url} answered {size}, more than the {self.limit} bytes a "
            "JSON answer may have; refusing to read it (is this URL a ComfyUI server?)",
            url=self.shown_url,
        )


def describe_body(body: bytes | bytearray) -> str:
    """What a body that is not JSON looks like, in words a person can act on."""
    text = bytes(body[: EXCERPT + 2048])
    stripped = text.strip()
    if not stripped:
        return "an empty body"
    title = _TITLE.search(text)
    if title or stripped[:1] == b"<":
        name = title.group(1).decode("utf-8", "replace").strip()[:120] if title else ""
        return f"an HTML page titled {name!r}" if name else "an HTML page"
    if stripped[:1] in (b"{", b"["):
        try:
            json.loads(body)
        except ValueError as exc:
            position = getattr(exc, "pos", None)
            return (
                f"truncated or malformed JSON (at byte {position})"
                if position is not None
                else "malformed JSON"
            )
    return "text that is not JSON"


def decode_json(
    body: bytes | bytearray,
    *,
    method: str,
    shown_url: str,
    status: int,
    content_type: str,
    scrub: Callable[[str], str],
) -> Any:
    """The decoded JSON of a body (``None`` for an empty one); raise a message saying what came instead."""
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except RecursionError:
        raise ComfyUIResponseError(
            f"ComfyUI {method} {shown_url} answered JSON nested too deeply", url=shown_url
        ) from None
    except ValueError:
        pass  # raised below, outside this block: the decode error holds the whole body
    excerpt = scrub(bytes(body[: EXCERPT + 512]).decode("utf-8", "replace"))[:EXCERPT]
    if status >= 400:
        raise errors.http_status_error(method, shown_url, status, excerpt)
    raise errors.not_json_error(method, shown_url, content_type, excerpt, received=describe_body(body))


def expect_object(body: Any, *, method: str, shown_url: str) -> dict[str, Any]:
    """``body`` when it is a JSON object, else a :class:`ComfyUIResponseError` saying what it was."""
    if isinstance(body, dict):
        return body
    what = "an empty body" if body is None else f"JSON {type(body).__name__}"
    raise ComfyUIResponseError(
        f"ComfyUI {method} {shown_url} answered {what} where a JSON object was expected "
        "(a proxy's or another service's answer?)",
        url=shown_url,
    )
