"""What a finished prompt hands to downstream tasks: output records, paths and downloads.

- :func:`output_records`: one JSON-safe record per file (node id, kind, filename, subfolder, type,
  server path, credential-free view URL) — the ``outputs`` XCom.
- :func:`collect_paths`: the operator's return value. Without ``output_dir``, the server-side paths
  ``<type>/<subfolder>/<filename>``; with it, every file streamed there via /view (a local folder
  or an object-storage URI such as ``s3://bucket/prefix``) and the written paths.
- :func:`status_from_event`: the validated trigger event as a :class:`PromptStatus`, or the
  exception the event stands for.

Invariant: nothing is ever written outside ``output_dir``; file names from the server pass
through :func:`airflow_comfy.protocol.outputs.safe_relative_parts` first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_comfy.exceptions import (
    ComfyUIError,
    ComfyUIPromptLostError,
    ComfyUIResponseError,
    ComfyUITimeoutError,
)
from airflow_comfy.protocol import errors, urls
from airflow_comfy.protocol.outputs import OutputRef, unique_refs
from airflow_comfy.protocol.states import PromptState, PromptStatus

if TYPE_CHECKING:
    from airflow_comfy.hooks.comfyui import ComfyUIHook


def output_records(refs: Iterable[OutputRef], base_url: str) -> list[dict[str, str]]:
    """One record per output file, safe for XCom (no credentials in any URL)."""
    return [
        {
            **ref.to_dict(),
            "server_path": ref.server_path,
            "view_url": urls.view_url(base_url, ref.filename, ref.subfolder, ref.type),
        }
        for ref in unique_refs(refs)
    ]


def collect_paths(
    hook: ComfyUIHook,
    refs: Iterable[OutputRef],
    output_dir: str | os.PathLike[str] | None,
    *,
    kinds: Iterable[str] | None = None,
) -> list[str]:
    """Server paths, or the paths of the downloaded copies when ``output_dir`` is set."""
    wanted = set(kinds) if kinds else None
    selected = [ref for ref in unique_refs(refs) if wanted is None or ref.kind in wanted]
    if output_dir is None:
        return [ref.server_path for ref in selected]
    target = os.fspath(output_dir)
    if hook.settings.is_pool:
        # Every server numbers its own files (img_00001_.png): keep the servers of a pool apart.
        target = target.rstrip("/") + "/" + urls.server_label(hook.base_url)
    return [str(hook.download(ref, target)) for ref in selected]


def status_from_event(event: Any) -> PromptStatus:
    """Validate a :class:`ComfyUIPromptTrigger` event; return the success status or raise its error."""
    if not isinstance(event, Mapping) or not isinstance(event.get("prompt_id"), str):
        raise ComfyUIResponseError(f"The ComfyUI trigger sent an event without a prompt id: {event!r:.200}")
    prompt_id = event["prompt_id"]
    kind = event.get("status")
    if kind == "lost":
        raise ComfyUIPromptLostError(str(event.get("message")), prompt_id=prompt_id)
    if kind == "timeout":
        raise ComfyUITimeoutError(str(event.get("message")))
    if kind == "failed":
        raise ComfyUIError(str(event.get("message")))
    try:
        state = PromptState(kind)
    except ValueError:
        raise ComfyUIResponseError(f"The ComfyUI trigger sent an unknown status {kind!r}") from None
    if not state.is_terminal:
        raise ComfyUIResponseError(f"The ComfyUI trigger fired while prompt {prompt_id} was {kind}")
    refs = []
    for item in event.get("outputs") or []:
        if isinstance(item, Mapping):
            fields = {k: str(item.get(k) or "") for k in ("node_id", "kind", "filename", "subfolder", "type")}
            refs.append(OutputRef(**fields))
    status = PromptStatus(
        prompt_id=prompt_id,
        state=state,
        outputs=tuple(refs),
        texts=dict(event.get("texts") or {}),
        failure=event.get("failure"),
    )
    failure = errors.error_for_status(status)
    if failure is not None:
        raise failure
    return status
