"""Prompt and client ids.

ComfyUI accepts a client-chosen ``prompt_id`` (0.3.64 takes any string; 0.4+ insists on a
canonical lowercase UUID), and does not de-duplicate: the same id submitted twice runs twice.

Invariant: :func:`deterministic_prompt_id` returns the same canonical lowercase UUID for the same
inputs on every machine and Python version, so a retried Airflow task can find the prompt its
earlier try submitted instead of starting a second GPU job.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

# Fixed namespace for airflow-comfy prompt ids (uuid5 of the project URL-ish name).
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "airflow-comfy:prompt")
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_json(value: Any) -> str:
    """Stable JSON text (sorted keys, no spaces) used to fingerprint a workflow."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def deterministic_prompt_id(*parts: Any) -> str:
    """A canonical UUID derived from ``parts`` (e.g. dag_id, run_id, task_id, map_index, workflow)."""
    return str(uuid.uuid5(NAMESPACE, canonical_json(list(parts))))


def new_client_id() -> str:
    return uuid.uuid4().hex


def new_prompt_id() -> str:
    """A fresh canonical UUID, accepted as ``prompt_id`` by every ComfyUI version."""
    return str(uuid.uuid4())


def is_canonical_uuid(value: str) -> bool:
    return isinstance(value, str) and _CANONICAL.fullmatch(value) is not None
