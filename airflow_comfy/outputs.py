"""What a finished prompt hands to downstream tasks: output records, paths and downloads.

- :func:`output_records`: one JSON-safe record per file (node id, kind, filename, subfolder, type,
  server path, credential-free view URL) — the ``outputs`` XCom.
- :func:`collect_paths`: the operator's return value. Without ``output_dir``, the server-side paths
  ``<type>/<subfolder>/<filename>``; with it, every file streamed there via /view (a local folder
  or an object-storage URI such as ``s3://bucket/prefix``) and the written paths.

Invariant: nothing is ever written outside ``output_dir``; file names from the server pass
through :func:`airflow_comfy.protocol.outputs.safe_relative_parts` first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from airflow_comfy.protocol import urls
from airflow_comfy.protocol.outputs import OutputRef, unique_refs

if TYPE_CHECKING:
    from airflow_comfy.hooks.client import ComfyUIClient


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
    client: ComfyUIClient,
    refs: Iterable[OutputRef],
    output_dir: str | os.PathLike[str] | None,
    *,
    kinds: Iterable[str] | None = None,
) -> list[str]:
    """Server paths, or the paths of the downloaded copies when ``output_dir`` is set.

    On a connection with several servers the copies go to a subfolder per server (every server
    numbers its own files, ``img_00001_.png``).
    """
    wanted = set(kinds) if kinds else None
    selected = [ref for ref in unique_refs(refs) if wanted is None or ref.kind in wanted]
    if output_dir is None:
        return [ref.server_path for ref in selected]
    target = os.fspath(output_dir)
    if client.settings.is_pool:
        target = target.rstrip("/") + "/" + urls.server_label(client.base_url)
    return [str(client.download(ref, target)) for ref in selected]
