"""Reading workflows and object_info from whatever the user has: a dict, JSON text, or a file.

A ComfyUI workflow comes in two shapes. The *API format* (what POST /prompt accepts) maps node ids
to ``{"class_type", "inputs", "_meta"}``; the *UI format* (what the web UI saves) has ``nodes`` and
``links`` lists. :func:`detect_format` tells them apart; :func:`load_workflow` parses any source and
returns a fresh dict the caller may mutate.

Invariant: every workflow returned here is a new object (never the caller's dict); an object_info
is shared, never copied deeply and never modified (it is read only). Every failure is
a :class:`~airflow_comfy.exceptions.ComfyUIWorkflowError` saying where the input came from (file
path, or "JSON text") and, for bad JSON, the line and column.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from airflow_comfy.exceptions import ComfyUIWorkflowError

WorkflowFormat = Literal["api", "ui"]
SAVED_SCHEME = "comfyui://"  # a workflow saved on the server: see workflows/saved.py
WorkflowSource = Mapping[str, Any] | str | Path


def detect_format(obj: Any) -> WorkflowFormat:
    """``"ui"`` for a web-UI save (``nodes`` list), ``"api"`` for a prompt (nodes with class_type).

    Raises ComfyUIWorkflowError when ``obj`` is empty or is neither.
    """
    if not isinstance(obj, Mapping):
        raise ComfyUIWorkflowError(
            f"a workflow must be a JSON object, got {type(obj).__name__}; expected the API format "
            '({"<node id>": {"class_type": ..., "inputs": {...}}}) or a ComfyUI web UI save'
        )
    if not obj:
        raise ComfyUIWorkflowError("the workflow is empty: it has no nodes")
    if isinstance(obj.get("nodes"), list):
        if not obj["nodes"]:
            raise ComfyUIWorkflowError("the workflow is empty: its 'nodes' list has no nodes")
        return "ui"
    if "prompt" in obj and isinstance(obj["prompt"], Mapping) and len(obj) <= 3:
        raise ComfyUIWorkflowError(
            "this looks like a POST /prompt request body ({'prompt': ...}); pass the value of its "
            "'prompt' key (the API-format workflow) instead"
        )
    bad = [str(key) for key, node in obj.items() if not (isinstance(node, Mapping) and "class_type" in node)]
    if not bad:
        return "api"
    raise ComfyUIWorkflowError(
        "not a ComfyUI workflow: it has no 'nodes' list (web UI format) and these top-level keys are "
        f"not API-format nodes with a 'class_type': {', '.join(sorted(bad)[:10])}"
        + (" ..." if len(bad) > 10 else "")
    )


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ComfyUIWorkflowError(
            f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None


def _read_file(path: Path) -> Any:
    if not path.is_file():
        raise ComfyUIWorkflowError(f"workflow file {path} does not exist (or is not a file)")
    raw = path.read_bytes()
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ComfyUIWorkflowError(f"{path} is not a readable gzip file: {exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ComfyUIWorkflowError(f"{path} is not UTF-8 text: {exc}") from None
    return _parse_json(text, f"file {path}")


def _looks_like_path(text: str) -> bool:
    stripped = text.strip()
    if not stripped or stripped[0] in "{[" or "\n" in stripped:
        return False
    return stripped.endswith((".json", ".json.gz")) or Path(stripped).is_file()


def copy_json(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars), several times faster than deepcopy.

    Other containers (tuples, mappings of other types) are copied as dicts and lists; other objects
    are shared, as they are immutable in JSON data.
    """
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    if isinstance(value, Mapping):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [copy_json(item) for item in value]
    return value


def read_json_source(source: WorkflowSource, what: str = "workflow") -> Any:
    """Parse ``source`` (mapping, JSON text, or path) into a fresh Python object."""
    if isinstance(source, Mapping):
        return copy_json(source)
    if isinstance(source, Path):
        return _read_file(source)
    if isinstance(source, bytes | bytearray):
        source = bytes(source).decode("utf-8-sig")
    if isinstance(source, str):
        if source.strip().startswith(SAVED_SCHEME):
            raise ComfyUIWorkflowError(
                f"{source.strip()!r} is a workflow saved on a ComfyUI server: it is read from that server "
                "(load_saved_workflow(hook, source), as the operator and the CLI with --url do)"
            )
        if _looks_like_path(source):
            return _read_file(Path(source.strip()))
        if not source.strip():
            raise ComfyUIWorkflowError(f"the {what} is empty: got an empty string")
        return _parse_json(source, f"the {what} (JSON text)")
    raise ComfyUIWorkflowError(
        f"cannot load a {what} from a {type(source).__name__}; give a dict, JSON text or a file path"
    )


def load_workflow(source: WorkflowSource) -> dict[str, Any]:
    """The workflow in ``source`` (dict, JSON text, or .json path), in whichever format it is in."""
    obj = read_json_source(source, "workflow")
    detect_format(obj)
    return obj


def _is_node_def(node_def: Any) -> bool:
    if type(node_def) is dict:  # the common case, without the slower abstract-class check
        return "input" in node_def
    return isinstance(node_def, Mapping) and "input" in node_def


def normalize_ids(api_workflow: Mapping[str, Any]) -> dict[str, Any]:
    """The API-format workflow with node ids and link references as strings, as ComfyUI expects.

    Templating with ``render_template_as_native_obj=True`` turns ``["13", 0]`` into ``[13, 0]``
    (and may turn node-id keys into ints); ComfyUI then cannot find node ``13``. Only the first item
    of a two-item list (a link, in the API format) and the keys change; the mapping is copied only
    when something changes.
    """
    changed = False
    result: dict[str, Any] = {}
    for key, node in api_workflow.items():
        changed |= not isinstance(key, str)
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if isinstance(inputs, Mapping) and any(_int_link(value) for value in inputs.values()):
            fixed = {
                name: [str(value[0]), value[1]] if _int_link(value) else value
                for name, value in inputs.items()
            }
            node = {**node, "inputs": fixed}
            changed = True
        result[str(key)] = node
    return result if changed else dict(api_workflow)


def _int_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int)
        and not isinstance(value[0], bool)
    )


def load_object_info(source: WorkflowSource) -> dict[str, Any]:
    """A ``GET /object_info`` body from a dict, JSON text, or a (.json / .json.gz) file.

    A mapping is not copied (only its top level, shallowly): the workflow functions read object_info
    and never modify it, so one parsed body serves every call. A recorded transcript
    (``{"request": ..., "response": {"body": {...}}}``) is unwrapped too.
    """
    # A parsed body is used as it is: never copied (it is large) and never modified here or later.
    obj = dict(source) if isinstance(source, Mapping) else read_json_source(source, "object_info")
    if isinstance(obj, Mapping) and isinstance(obj.get("response"), Mapping) and "body" in obj["response"]:
        obj = obj["response"]["body"]
    if not isinstance(obj, dict) or not obj:
        raise ComfyUIWorkflowError("object_info must be a non-empty JSON object mapping node classes")
    bad = [name for name, node_def in obj.items() if not _is_node_def(node_def)]
    if bad:
        raise ComfyUIWorkflowError(
            f"object_info entries without an 'input' section: {', '.join(sorted(bad)[:10])}; is this the "
            "body of GET /object_info?"
        )
    return obj


__all__ = [
    "WorkflowFormat",
    "WorkflowSource",
    "detect_format",
    "load_object_info",
    "load_workflow",
    "normalize_ids",
]
