"""What a task publishes to Airflow about its prompt: XComs and the ``extra`` of its Asset events.

XComs: ``prompt_id``, ``prompt_url`` (its history entry) and ``comfyui_url`` (the web UI) before
waiting, so links and downstream sensors work while the prompt runs; ``outputs`` (one record per
file) and ``texts`` after it succeeded.

Invariants: nothing published here carries a credential (URLs come from ``protocol.urls``,
redacted); the ``extra`` of an Asset event is JSON-safe.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_comfy.protocol import urls

if TYPE_CHECKING:
    from airflow.sdk import Context


def push_prompt_xcoms(context: Context, base_url: str, prompt_id: str) -> None:
    """``prompt_id``, ``prompt_url`` and ``comfyui_url``."""
    ti = context["ti"]
    base = urls.redact_url(base_url)
    ti.xcom_push(key="prompt_id", value=prompt_id)
    ti.xcom_push(key="prompt_url", value=urls.endpoint(base, urls.history_path(prompt_id)))
    ti.xcom_push(key="comfyui_url", value=base)


def push_output_xcoms(context: Context, records: list[dict[str, str]], texts: Mapping[str, Any]) -> None:
    """``outputs`` (the records) and, when the prompt produced text, ``texts``."""
    ti = context["ti"]
    ti.xcom_push(key="outputs", value=records)
    if texts:
        ti.xcom_push(key="texts", value=dict(texts))


def asset_event_extra(
    prompt_id: str, paths: Iterable[str], records: Iterable[Mapping[str, Any]], base_url: str
) -> dict[str, Any]:
    """The ``extra`` of the Asset events of a finished prompt (JSON-safe, credential-free).

    ``{"prompt_id", "paths", "outputs", "comfyui_url"}``: ``paths`` are what the task returned (the
    downloaded copies, or the server-side paths); ``outputs`` the records of the ``outputs`` XCom.
    """
    return json.loads(
        json.dumps(
            {
                "prompt_id": prompt_id,
                "paths": [str(path) for path in paths],
                "outputs": [dict(record) for record in records],
                "comfyui_url": urls.redact_url(base_url),
            }
        )
    )


def emit_asset_events(context: Context, extra: Mapping[str, Any]) -> list[Any]:
    """Merge ``extra`` into the event of every Asset (or Asset reference) outlet of the task.

    Returns those outlets. Asset aliases are left alone: an alias event needs a concrete asset,
    which the DAG author adds (``outlet_events[alias].add(Asset(...), extra=...)``).
    """
    from airflow.sdk import Asset
    from airflow.sdk.definitions.asset import AssetRef

    task = context.get("task")
    events = context.get("outlet_events")
    if task is None or events is None:
        return []
    emitted = []
    for outlet in getattr(task, "outlets", None) or ():
        if isinstance(outlet, Asset | AssetRef):
            events[outlet].extra.update(extra)
            emitted.append(outlet)
    return emitted
