"""Per-run changes to an API-format workflow: set node inputs by node id, title or class type.

Accepted keys (``overrides`` is a mapping):

- ``{"3": {"seed": 42}}`` and ``{"3.seed": 42}`` / ``{"3.inputs.seed": 42}``: node id 3;
- ``{"Positive Prompt": {"text": "a cat"}}`` / ``{"Positive Prompt.text": "a cat"}``: the node whose
  ``_meta.title`` is "Positive Prompt" (the name given to the node in the web UI);
- ``{"KSampler": {"seed": 1}}``: the node of that ``class_type``, when there is exactly one.

A selector is tried as a node id first, then as a title, then as a class type. A node nobody renamed
answers to every default title of its class (the web UI's English label such as "Image Blur", and
the class name "ImageBlur", whichever of them the workflow's ``_meta.title`` holds). In a dotted key the
input name is the part after the last dot (titles may contain dots, input names never do).

Input names: setting an input the node already has is always allowed. Setting one it does not
have yet is allowed when no ``object_info`` is given (optional inputs are often absent from a
saved workflow), and, when ``object_info`` is given, only if the node class declares that input
(required, optional or hidden); otherwise it is an error listing the valid names.

Invariant: :func:`apply_overrides` never mutates its arguments (``apply_overrides_in_place`` only
its workflow); it returns a new workflow, or
raises ComfyUIWorkflowError before changing anything when any override matches no node, matches
several nodes, or names an unknown input. Error messages list the candidates.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from airflow_comfy.exceptions import ComfyUIWorkflowError
from airflow_comfy.workflows.frontend import default_titles
from airflow_comfy.workflows.load import copy_json


def _title(node: Mapping[str, Any]) -> str | None:
    meta = node.get("_meta")
    return str(meta["title"]) if isinstance(meta, Mapping) and meta.get("title") is not None else None


def _id_key(node_id: str) -> tuple[Any, ...]:
    """Sort key: "3" < "10" < "10:2" < "a"."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in str(node_id).split(":"))


def _candidates(workflow: Mapping[str, Any]) -> str:
    parts = []
    for node_id in sorted(workflow, key=_id_key):
        node = workflow[node_id]
        title = _title(node)
        label = f"{node_id} ({node.get('class_type')}"
        label += f", title {title!r})" if title and title != node.get("class_type") else ")"
        parts.append(label)
    return ", ".join(parts)


def _default_title(node: Mapping[str, Any], selector: str) -> bool:
    """True when ``node`` was not renamed and ``selector`` is another default title of its class."""
    titles = default_titles(str(node.get("class_type")))
    return selector in titles and (_title(node) or selector) in titles


def find_nodes(workflow: Mapping[str, Any], selector: str) -> list[str]:
    """Ids of the nodes ``selector`` names: the node id, else nodes with that title, else that class."""
    if selector in workflow:
        return [selector]
    by_title = [node_id for node_id, node in workflow.items() if _title(node) == selector]
    if by_title:
        return by_title
    by_default_title = [node_id for node_id, node in workflow.items() if _default_title(node, selector)]
    if by_default_title:
        return by_default_title
    return [node_id for node_id, node in workflow.items() if node.get("class_type") == selector]


def resolve_node(workflow: Mapping[str, Any], selector: str) -> str:
    """The one node id ``selector`` names; ComfyUIWorkflowError when it names none or several."""
    matches = find_nodes(workflow, selector)
    if not matches:
        raise ComfyUIWorkflowError(
            f"override {selector!r} matches no node id, title or class type; nodes: {_candidates(workflow)}"
        )
    if len(matches) > 1:
        subset = {node_id: workflow[node_id] for node_id in matches}
        raise ComfyUIWorkflowError(
            f"override {selector!r} is ambiguous: it matches {len(matches)} nodes: {_candidates(subset)}; "
            "use a node id (e.g. '3.seed') or give the nodes distinct titles"
        )
    return matches[0]


def _split(key: str, workflow: Mapping[str, Any]) -> tuple[str, str]:
    """``"sel.inputs.name"`` / ``"sel.name"`` -> (selector, input name)."""
    if "." not in key:
        raise ComfyUIWorkflowError(
            f"override {key!r} needs an input name: use {{{key!r}: {{'<input>': value}}}} or '{key}.<input>'"
        )
    selector, name = key.rsplit(".", 1)
    if selector.endswith(".inputs") and not find_nodes(workflow, selector):
        selector = selector[: -len(".inputs")]
    if not selector or not name:
        raise ComfyUIWorkflowError(f"override {key!r} is not of the form '<node>.<input>'")
    return selector, name


def _declared_inputs(object_info: Mapping[str, Any], class_type: str) -> set[str] | None:
    node_def = object_info.get(class_type)
    if not isinstance(node_def, Mapping):
        return None
    section = node_def.get("input") or {}
    names: set[str] = set()
    for part in ("required", "optional", "hidden"):
        names.update((section.get(part) or {}).keys())
    return names


def _check_input(
    node_id: str, node: Mapping[str, Any], name: str, object_info: Mapping[str, Any] | None
) -> None:
    inputs = node.get("inputs") or {}
    if name in inputs or object_info is None:
        return
    declared = _declared_inputs(object_info, str(node.get("class_type")))
    if declared is None or name in declared:
        return
    raise ComfyUIWorkflowError(
        f"override of node {node_id} ({node.get('class_type')}): it has no input {name!r}; "
        f"valid inputs: {', '.join(sorted(declared | set(inputs)))}"
    )


def apply_overrides(
    api_workflow: Mapping[str, Any],
    overrides: Mapping[str, Any] | None,
    *,
    object_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of ``api_workflow`` with ``overrides`` applied (see the module docstring for keys)."""
    return apply_overrides_in_place(copy_json(api_workflow), overrides, object_info=object_info)


def apply_overrides_in_place(
    result: dict[str, Any],
    overrides: Mapping[str, Any] | None,
    *,
    object_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`apply_overrides` on a workflow the caller owns (no copy); returns it.

    Still all or nothing: every override is checked before the first is applied.
    """
    if not overrides:
        return result
    if not isinstance(overrides, Mapping):
        raise ComfyUIWorkflowError(f"overrides must be a mapping, got {type(overrides).__name__}")
    changes: list[tuple[str, str, Any]] = []
    for key, value in overrides.items():
        key = str(key)
        if isinstance(value, Mapping) and find_nodes(result, key):
            node_id = resolve_node(result, key)
            changes.extend((node_id, str(name), item) for name, item in value.items())
            continue
        if isinstance(value, Mapping) and "." not in key:
            resolve_node(result, key)  # raises: matches nothing
        selector, name = _split(key, result)
        changes.append((resolve_node(result, selector), name, value))
    for node_id, name, _value in changes:
        _check_input(node_id, result[node_id], name, object_info)
    for node_id, name, value in changes:
        result[node_id].setdefault("inputs", {})[name] = copy.deepcopy(value)
    return result
