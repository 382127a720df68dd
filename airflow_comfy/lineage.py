"""Hook-level lineage: the files a prompt read (uploads) and wrote (outputs), for Airflow's collector.

Invariant: lineage is best effort. It is recorded only where Airflow's hook lineage collector exists
(``airflow.sdk.lineage``; a no-op unless a lineage plugin such as OpenLineage is installed), and a
failure to record it never fails the task. URIs never carry credentials.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def hook_lineage_collector() -> Any | None:
    """Airflow's hook lineage collector, or ``None`` where this Airflow has none."""
    try:
        from airflow.sdk.lineage import get_hook_lineage_collector
    except ImportError:  # pragma: no cover - every supported Airflow (>= 3.2) has it
        return None
    return get_hook_lineage_collector()


def lineage_uri(path: str) -> str:
    """A lineage URI for a local path (``file://…``) or an object-storage URI (kept as it is)."""
    if "://" in path:
        return path
    return Path(path).expanduser().resolve().as_uri()


def record_lineage(source: Any, *, inputs: Iterable[str] = (), outputs: Iterable[str] = ()) -> None:
    """Record ``inputs`` and ``outputs`` (URIs) as lineage of ``source`` (a hook or client); best effort."""
    try:
        collector = hook_lineage_collector()
        if collector is None:
            return
        for uri in inputs:
            collector.add_input_asset(context=source, uri=uri)
        for uri in outputs:
            collector.add_output_asset(context=source, uri=uri)
    except Exception as exc:  # lineage must never fail the task
        logging.getLogger(__name__).debug("Could not record lineage: %s", exc)


def record_output_lineage(
    source: Any, paths: Iterable[str], records: Iterable[Mapping[str, Any]], *, downloaded: bool
) -> None:
    """Downloaded copies as ``file://`` or object-storage URIs; else each file's ``/view`` URL."""
    if downloaded:
        uris = [lineage_uri(path) for path in paths]
    else:
        wanted = set(paths)
        uris = [str(r["view_url"]) for r in records if r.get("server_path") in wanted and r.get("view_url")]
    record_lineage(source, outputs=uris)
