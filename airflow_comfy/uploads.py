"""Input files for a workflow: upload them to ComfyUI and wire the returned names into nodes.

ComfyUI takes images, and also video and audio files, through ``POST /upload/image``. It answers
``{"name", "subfolder", "type"}``; identical bytes get the existing name back (the server compares
content), different bytes under a taken name get ``name (1).ext``. A LoadImage-like node then refers
to the file as ``<subfolder>/<name>`` (or just ``<name>`` without a subfolder).

Sources are local paths or object-storage URIs (``s3://…``, ``gs://…``, ``file://…``) read through
Airflow's ``ObjectStoragePath``. Targets are ``"<node>"`` or ``"<node>.<input>"`` where ``<node>`` is a
node id, a title or a unique class_type (the same selectors as overrides).

Invariant: the name wired into the workflow is always the one the server returned, never the local
file name, so a renamed or de-duplicated upload is referenced correctly.

Each uploaded source is recorded as a hook-level lineage input (``file://…`` or its object-storage
URI) where Airflow collects hook lineage; see :func:`airflow_comfy.lineage.record_lineage`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from airflow_comfy.exceptions import ComfyUIWorkflowError
from airflow_comfy.lineage import lineage_uri, record_lineage
from airflow_comfy.workflows import apply_overrides, find_nodes, resolve_node

if TYPE_CHECKING:
    from airflow_comfy.hooks.client import ComfyUIClient

InputSource = str | os.PathLike[str]
# Input names that take an uploaded file, by the object_info flag the frontend keys its upload widget on.
_UPLOAD_FLAGS = {"image_upload": "image", "video_upload": "video", "audio_upload": "audio"}
DEFAULT_SUBFOLDER = "airflow"


def uploaded_reference(answer: Mapping[str, str]) -> str:
    """How a node refers to an uploaded file: ``subfolder/name`` or ``name``."""
    name, subfolder = answer.get("name", ""), answer.get("subfolder", "")
    return f"{subfolder}/{name}" if subfolder else name


def _open_source(source: InputSource) -> tuple[IO[bytes], str]:
    text = os.fspath(source)
    if "://" in text and not text.startswith("file://"):
        from airflow.sdk import ObjectStoragePath

        remote = ObjectStoragePath(text)
        if not remote.exists():
            raise ComfyUIWorkflowError(f"Cannot upload {text}: no such object")
        return remote.open("rb"), remote.name
    path = Path(text.removeprefix("file://")).expanduser()
    if not path.is_file():
        raise ComfyUIWorkflowError(f"Cannot upload {path}: no such file")
    return path.open("rb"), path.name


def upload_file(
    client: ComfyUIClient, source: InputSource, *, subfolder: str = DEFAULT_SUBFOLDER, overwrite: bool = False
) -> dict[str, str]:
    """Upload one local or object-storage file; returns the server's ``{"name", "subfolder", "type"}``."""
    handle, name = _open_source(source)
    with handle:
        answer = client.upload_image(handle, filename=name, subfolder=subfolder, overwrite=overwrite)
    record_lineage(client.lineage_context, inputs=[lineage_uri(os.fspath(source).removeprefix("file://"))])
    return answer


def upload_input_name(node_class_info: Mapping[str, Any] | None, node_inputs: Mapping[str, Any]) -> str:
    """The input of a node that takes an uploaded file (LoadImage → ``image``, LoadAudio → ``audio``…)."""
    if node_class_info:
        declared = node_class_info.get("input") or {}
        for section in ("required", "optional"):
            for input_name, spec in (declared.get(section) or {}).items():
                options = spec[1] if isinstance(spec, list | tuple) and len(spec) > 1 else {}
                if isinstance(options, Mapping) and any(options.get(flag) for flag in _UPLOAD_FLAGS):
                    return str(input_name)
    for candidate in ("image", "video", "audio", "file"):
        if candidate in node_inputs:
            return candidate
    raise ComfyUIWorkflowError(
        "cannot tell which input takes the uploaded file; name it as '<node>.<input>' "
        f"(inputs: {', '.join(sorted(node_inputs)) or 'none'})"
    )


def wire_inputs(
    client: ComfyUIClient,
    workflow: Mapping[str, Any],
    inputs: Mapping[str, InputSource],
    *,
    subfolder: str = DEFAULT_SUBFOLDER,
    object_info: Mapping[str, Any] | None = None,
    cache: dict[str, dict[str, str]] | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Upload every ``inputs`` file and point its target node at it.

    Returns the new workflow and, per target, the server's answer for its upload. ``cache`` (source
    → answer, for one server and subfolder) makes each distinct source upload once.
    """
    changes: dict[str, Any] = {}
    uploads: dict[str, dict[str, str]] = {}
    for target, source in inputs.items():
        node_id, input_name = _split_target(workflow, target)
        node = workflow[node_id]
        if input_name is None:
            class_info = (object_info or {}).get(node.get("class_type", ""))
            input_name = upload_input_name(class_info, node.get("inputs") or {})
        answer = cache.get(os.fspath(source)) if cache is not None else None
        if answer is None:
            answer = upload_file(client, source, subfolder=subfolder)
            if cache is not None:
                cache[os.fspath(source)] = answer
        uploads[target] = answer
        changes[f"{node_id}.{input_name}"] = uploaded_reference(answer)
    return apply_overrides(workflow, changes), uploads


def _split_target(workflow: Mapping[str, Any], target: str) -> tuple[str, str | None]:
    """``"<node>"`` or ``"<node>.<input>"``; a selector that itself contains dots wins when it matches."""
    if find_nodes(workflow, target):
        return resolve_node(workflow, target), None
    selector, dot, input_name = target.rpartition(".")
    if dot and find_nodes(workflow, selector):
        return resolve_node(workflow, selector), input_name
    return resolve_node(workflow, target), None  # raises with the candidates
