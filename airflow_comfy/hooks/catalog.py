"""The node catalogue of a server (``GET /object_info``), cached across tasks of a process and on disk.

``/object_info`` is ComfyUI's largest answer (about 0.5 MB on a stock server, far more with custom
nodes) and every validated or converted workflow needs it. It is kept per server:

- in this process, and under ``$AIRFLOW_COMFY_CACHE_DIR`` (default ``~/.cache/airflow-comfy``) so
  the next task on the worker does not download it again;
- stamped with the server's software (``/system_stats``: ComfyUI, Python and PyTorch versions and its
  command line), checked at most every :data:`RECHECK_AFTER` seconds, and dropped after
  :data:`MAX_AGE` seconds whatever the stamp says (a model file added to the server changes a combo).

Invariants: the cached dict is shared and never mutated or copied by its readers (the workflow
code reads it only); a cached catalogue can only cause a refetch, never a rejection — callers
validate against a fresh one before they report a workflow invalid (:func:`fresh_object_info`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_comfy.exceptions import ComfyUIError
from airflow_comfy.protocol import urls

if TYPE_CHECKING:
    from airflow_comfy.hooks.transport import Transport

RECHECK_AFTER = 60.0
MAX_AGE = 3600.0


@dataclass(frozen=True)
class _Entry:
    stamp: str
    fetched_at: float  # wall clock, so that entries read from disk keep their age
    checked_at: float
    info: dict[str, Any]


_MEMORY: dict[str, _Entry] = {}
_LOCK = threading.Lock()


def cache_dir() -> Path:
    return Path(os.environ.get("AIRFLOW_COMFY_CACHE_DIR") or Path.home() / ".cache" / "airflow-comfy")


def object_info(transport: Transport, *, refresh: bool = False) -> dict[str, Any]:
    """The server's node catalogue, from the cache when it is still good (module docstring)."""
    base_url = transport.settings.base_url
    now = time.time()
    entry = None if refresh else (_MEMORY.get(base_url) or _read_disk(base_url))
    if entry is not None and now - entry.fetched_at < MAX_AGE:
        if now - entry.checked_at < RECHECK_AFTER:
            return entry.info
        stamp = _stamp(transport)
        if stamp == entry.stamp:
            _MEMORY[base_url] = _Entry(entry.stamp, entry.fetched_at, now, entry.info)
            return entry.info
    stamp = _stamp(transport)
    info = transport.json_object("GET", urls.OBJECT_INFO)
    fresh = _Entry(stamp, now, now, info)
    with _LOCK:
        _MEMORY[base_url] = fresh
    _write_disk(base_url, fresh)
    return info


def fresh_object_info(transport: Transport, *, since: float) -> dict[str, Any] | None:
    """A newly fetched catalogue when the cached one was fetched before ``since`` (wall clock),
    else ``None`` (the caller already has a fresh one)."""
    entry = _MEMORY.get(transport.settings.base_url)
    if entry is not None and entry.fetched_at >= since:
        return None
    return object_info(transport, refresh=True)


def forget(base_url: str | None = None) -> None:
    """Drop the in-process cache of one server (or of all); tests and the CLI's ``--refresh``."""
    with _LOCK:
        if base_url is None:
            _MEMORY.clear()
        else:
            _MEMORY.pop(base_url, None)


def _stamp(transport: Transport) -> str:
    try:
        stats = transport.json_object("GET", urls.SYSTEM_STATS)
    except ComfyUIError:
        return ""  # no stamp: an entry without one is refetched at its next check
    system = stats.get("system") if isinstance(stats.get("system"), dict) else {}
    keys = ("comfyui_version", "python_version", "pytorch_version", "argv", "embedded_python")
    return json.dumps([system.get(key) for key in keys], sort_keys=True, default=str)


def _path(base_url: str) -> Path:
    return cache_dir() / "object_info" / (hashlib.sha256(base_url.encode()).hexdigest()[:32] + ".json")


def _read_disk(base_url: str) -> _Entry | None:
    try:
        raw = json.loads(_path(base_url).read_text(encoding="utf-8"))
        if raw.get("base_url") != base_url or not isinstance(raw.get("info"), dict):
            return None
        entry = _Entry(str(raw["stamp"]), float(raw["fetched_at"]), 0.0, raw["info"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    with _LOCK:
        _MEMORY[base_url] = entry
    return entry


def _write_disk(base_url: str, entry: _Entry) -> None:
    """Best effort and atomic (write a temporary file, then rename): a cache must never fail a task."""
    path = _path(base_url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "base_url": base_url,
            "stamp": entry.stamp,
            "fetched_at": entry.fetched_at,
            "info": entry.info,
        }
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8"
        ) as tmp:
            json.dump(record, tmp, separators=(",", ":"))
        os.replace(tmp.name, path)
    except OSError:
        return
