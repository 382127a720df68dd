"""What a batch writes down: manifest lines, output paths per item, and the task's summary.

Invariants: an item's downloads go to ``<output_dir>/<item folder>/`` where the folder is the
item's key made safe (:func:`item_folder`), so no key and no file name a server sends can write
outside ``output_dir``; a manifest line is JSON-safe and carries no credential (server URLs are
redacted); the summary holds counts and the manifest's path, never per-item paths.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_comfy.exceptions import ComfyUIBatchFailedError
from airflow_comfy.protocol import urls
from airflow_comfy.protocol.outputs import unique_refs
from airflow_comfy.protocol.states import PromptStatus

if TYPE_CHECKING:
    from airflow_comfy.batch.ledger import InFlight
    from airflow_comfy.batch.options import BatchOptions
    from airflow_comfy.hooks.client import ComfyUIClient

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


@dataclass(frozen=True)
class BatchSummary:
    """What the task returns (and pushes to XCom): never the per-item paths."""

    manifest: str
    total: int
    succeeded: int
    failed: int
    earlier: int
    errors: tuple[str, ...]

    def as_xcom(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "finished_earlier": self.earlier,
            "errors": list(self.errors),
        }

    def budget_error(self, max_failed: int | float) -> ComfyUIBatchFailedError:
        """The error of a batch with more failed items than ``max_failed`` allows."""
        shown = "\n  ".join(self.errors)
        return ComfyUIBatchFailedError(
            f"{self.failed} item(s) of the batch failed, more than max_failed={max_failed!r} allows; the "
            f"manifest {self.manifest} lists every item. First failures:\n  {shown}",
            counts=self.as_xcom(),
        )


def item_folder(key: str) -> str:
    """The folder of an item's downloads: the key with unsafe characters replaced; a key that had
    any (or is empty, ``.`` or ``..``) gets a short hash so that two keys never share a folder."""
    safe = _UNSAFE.sub("_", key)[:100]
    if safe != key or safe in ("", ".", ".."):
        safe = f"{safe.strip('.') or 'item'}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    return safe


def output_paths(
    client: ComfyUIClient, entry: InFlight, status: PromptStatus, options: BatchOptions
) -> list[str]:
    """The item's outputs: downloaded into its folder under ``output_dir``, or their server paths."""
    kinds = set(options.output_kinds or ())
    refs = [ref for ref in unique_refs(status.outputs) if not kinds or ref.kind in kinds]
    if not options.download:
        return [ref.server_path for ref in refs]
    folder = options.output_dir.rstrip("/") + "/" + item_folder(entry.item.key)
    return [str(client.download(ref, folder)) for ref in refs]


def manifest_line(
    entry: InFlight,
    status: str,
    final: PromptStatus | None = None,
    *,
    outputs: list[str] | None = None,
    error: str | None = None,
    try_number: int = 1,
) -> dict[str, Any]:
    """The manifest line of a finished item (:mod:`airflow_comfy.batch.manifest`)."""
    started, finished = prompt_times(final)
    return {
        "key": entry.item.key,
        "position": entry.item.position,
        "status": status,
        "prompt_id": entry.prompt_id or None,
        "server": urls.redact_url(entry.server) if entry.server else None,
        "overrides": dict(entry.item.overrides),
        "inputs": dict(entry.item.inputs),
        "outputs": outputs or [],
        "queued_at": iso(entry.queued_at) if entry.queued_at else None,
        "started_at": started,
        "finished_at": finished or iso(time.time()),
        "attempts": entry.attempt,
        "try_number": try_number,
        "error": error,
    }


def iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="milliseconds")


def epoch(text: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return time.time()


def prompt_times(status: PromptStatus | None) -> tuple[str | None, str | None]:
    """When ComfyUI started and ended the prompt, from its history messages (milliseconds)."""
    if status is None:
        return None, None
    stamps = {kind: data.get("timestamp") for kind, data in status.messages if isinstance(data, dict)}
    start = stamps.get("execution_start")
    end = (
        stamps.get("execution_success")
        or stamps.get("execution_error")
        or stamps.get("execution_interrupted")
    )
    return (
        iso(start / 1000) if isinstance(start, int | float) else None,
        iso(end / 1000) if isinstance(end, int | float) else None,
    )
