"""Downloading ComfyUI outputs through ``GET /view`` into a local folder or object storage.

Invariants: a file is only ever written inside the destination folder it was meant for, whatever
name the server sent (:func:`airflow_comfy.protocol.outputs.safe_local_path`); it is streamed in
1 MiB chunks (constant memory); a failed transfer leaves no partial file (local downloads go to a
``.part`` file renamed at the end; a broken object-storage upload is deleted); no download grows
past the connection's ``extra.max_download_bytes`` (refused from ``Content-Length`` or while
streaming); an error names the
output it was for (node, filename, subfolder, type) and blames the credentials only for a 401
(:func:`airflow_comfy.protocol.errors.download_error`).
"""

from __future__ import annotations

import os
from contextlib import suppress
from typing import IO, TYPE_CHECKING, Any, Protocol

import requests

from airflow_comfy.exceptions import ComfyUIError, ComfyUIResponseError
from airflow_comfy.protocol import errors
from airflow_comfy.protocol.outputs import OutputRef, safe_local_path, safe_relative_parts

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from airflow_comfy.hooks.connection import ComfyUISettings


class Viewer(Protocol):
    """What a download needs of a client (:class:`~airflow_comfy.hooks.client.ComfyUIClient`)."""

    settings: ComfyUISettings  # its max_download_bytes

    def view(
        self, filename: str, subfolder: str = "", folder_type: str = "output"
    ) -> AbstractContextManager[requests.Response]: ...

    def view_url(self, ref: OutputRef) -> str: ...


DOWNLOAD_CHUNK = 1024 * 1024


def download(
    client: Viewer, ref: OutputRef, dest_dir: str | os.PathLike[str], *, keep_subfolder: bool
) -> Any:
    """Stream ``ref`` into ``dest_dir``; returns the written ``Path`` (or ``ObjectStoragePath``)."""
    target_dir = os.fspath(dest_dir)
    if "://" in target_dir and not target_dir.startswith("file://"):
        return _to_object_storage(client, ref, target_dir, keep_subfolder)
    target = safe_local_path(
        target_dir.removeprefix("file://"), ref.subfolder if keep_subfolder else "", ref.filename
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with client.view(ref.filename, ref.subfolder, ref.type) as response, partial.open("wb") as handle:
            _copy(client, ref, response, handle)
    except ComfyUIError as exc:
        partial.unlink(missing_ok=True)
        raise errors.download_error(ref, exc) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return target


def _to_object_storage(client: Viewer, ref: OutputRef, base: str, keep_subfolder: bool) -> Any:
    from airflow.sdk import ObjectStoragePath

    parts = safe_relative_parts(ref.subfolder if keep_subfolder else "", ref.filename)
    destination = ObjectStoragePath(base).joinpath(*parts)
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with client.view(ref.filename, ref.subfolder, ref.type) as response, destination.open("wb") as handle:
            _copy(client, ref, response, handle)
    except BaseException as exc:
        with suppress(Exception):
            destination.unlink()
        if isinstance(exc, ComfyUIError):
            raise errors.download_error(ref, exc) from None
        raise
    return destination


def _copy(client: Viewer, ref: OutputRef, response: requests.Response, handle: IO[bytes]) -> None:
    limit = client.settings.max_download_bytes
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(client, ref, f"announced {int(declared)} bytes", limit)
    written = 0
    try:
        for chunk in response.iter_content(chunk_size=DOWNLOAD_CHUNK):
            written += len(chunk)
            if written > limit:
                raise _too_large(client, ref, f"sent more than {limit} bytes", limit)
            handle.write(chunk)
    except requests.RequestException as exc:
        raise errors.connection_error("GET", client.view_url(ref), type(exc).__name__) from None


def _too_large(client: Viewer, ref: OutputRef, what: str, limit: int) -> ComfyUIResponseError:
    url = client.view_url(ref)
    return ComfyUIResponseError(
        f"GET {url} {what}, more than the connection's extra.max_download_bytes ({limit}): not "
        "downloaded. Raise that limit if the output really is this large",
        url=url,
    )


__all__ = ["DOWNLOAD_CHUNK", "download"]
