"""UI-format (web UI save) to API-format (POST /prompt) conversion, the way the frontend does it.

Follows ComfyUI_frontend's ``graphToPrompt`` (src/utils/executionUtil.ts) and
``ExecutableNodeDTO.resolveInput``/``resolveOutput``:

- PrimitiveNodes first push their value into the widgets they feed (``applyToGraph``);
- every node that is not virtual (Reroute, PrimitiveNode, Note, MarkdownNote, subgraph instances),
  muted (mode 2) or bypassed (mode 4) is emitted with its prompt widget values, then its linked
  inputs, which replace widget values of the same name;
- a link is followed through Reroutes, through bypassed nodes (to the input of the bypassed node
  whose type matches, preferring the same slot index), and into/out of subgraph instances; a link
  that ends at a PrimitiveNode leaves the widget value in place;
- legacy group node instances are expanded into their inner nodes (``"<instance id>:<index>"``, see
  ``workflows/_groups.py``): the instance's widget values go to the inner widgets,
  its inputs to the inner slots they were mapped to, and a link from one of its outputs goes to
  the inner node behind it, through inner Reroutes only (``GroupNodeHandler.updateLink``);
- inputs linked to nodes that were not emitted (muted ones) are dropped; array widget values are
  wrapped as ``{"__value__": [...]}``.

Invariant: the result shares nothing with the arguments (every value in it is new), and neither
argument is modified; every error is a ComfyUIWorkflowError naming the node (its
execution id and type) and what could not be converted. Node ids inside subgraph instances are
``"<instance id>:<inner id>"``, like the frontend's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_comfy.exceptions import ComfyUIWorkflowError
from airflow_comfy.workflows.frontend import js_value, node_title
from airflow_comfy.workflows.graph import (
    BYPASSED,
    MUTED,
    SUBGRAPH_INPUT_NODE,
    ExecNode,
    Link,
    flatten,
    group_widget_values,
    proxy_widget_values,
)
from airflow_comfy.workflows.load import detect_format
from airflow_comfy.workflows.order import prompt_order
from airflow_comfy.workflows.widgets import is_valid_connection, widget_values

Resolved = tuple[str, Any, int]  # ("link", exec_id, slot) or ("value", value, -1)


class _Resolver:
    """Follows links to the node output (or promoted widget value) an input really receives."""

    def __init__(self, by_id: dict[str, ExecNode]) -> None:
        self.by_id = by_id

    def _node_in(self, entry: ExecNode, node_id: Any) -> ExecNode | None:
        return self.by_id.get(":".join((*entry.scope.path, str(node_id))))

    def _link(self, entry: ExecNode, link_id: int, what: str) -> Link:
        link = entry.scope.links.get(link_id)
        if link is None:
            raise ComfyUIWorkflowError(
                f"{entry.describe()}: {what} refers to link {link_id}, which does not exist"
            )
        return link

    def resolve_input(
        self, entry: ExecNode, index: int, visited: set[str], link_type: Any = None
    ) -> Resolved | None:
        _visit(entry, "input", index, visited)
        if index >= len(entry.inputs):
            return None
        slot = entry.inputs[index]
        if slot.link is None:
            return None
        link = self._link(entry, slot.link, f"input '{slot.name}'")
        owner = entry.scope.owner
        if owner is not None and _same_id(link.origin_id, SUBGRAPH_INPUT_NODE):
            if link.origin_slot >= len(owner.inputs):
                raise ComfyUIWorkflowError(
                    f"{entry.describe()}: input '{slot.name}' comes from subgraph input {link.origin_slot}, "
                    f"which {owner.describe()} does not have"
                )
            if owner.inputs[link.origin_slot].link is None:
                if link.origin_slot in owner.promoted:
                    return ("value", owner.promoted[link.origin_slot], -1)
                return None
            return self.resolve_input(owner, link.origin_slot, visited)
        origin = self._node_in(entry, link.origin_id)
        if origin is None:
            raise ComfyUIWorkflowError(
                f"{entry.describe()}: input '{slot.name}' is linked (link {link.id}) to node "
                f"{link.origin_id}, which does not exist in the workflow"
            )
        return self.resolve_output(origin, link.origin_slot, link_type or slot.type, visited)

    def resolve_output(
        self, entry: ExecNode, slot: int, link_type: Any, visited: set[str]
    ) -> Resolved | None:
        _visit(entry, "output", slot, visited)
        if entry.mode == BYPASSED:
            index = _bypass_slot_index(entry, slot, link_type)
            return None if index < 0 else self.resolve_input(entry, index, visited)
        if entry.kind == "subgraph":
            return self._resolve_subgraph_output(entry, slot, link_type, visited)
        if entry.kind == "group":
            return self._resolve_group_output(entry, slot, link_type, visited)
        if entry.kind == "virtual":
            return self.resolve_input(entry, slot, visited, link_type) if slot < len(entry.inputs) else None
        return ("link", entry.exec_id, slot)

    def _resolve_subgraph_output(
        self, entry: ExecNode, slot: int, link_type: Any, visited: set[str]
    ) -> Resolved | None:
        assert entry.inner is not None and entry.inner.definition is not None
        outputs = [o for o in entry.inner.definition.get("outputs") or [] if isinstance(o, Mapping)]
        if slot >= len(outputs):
            raise ComfyUIWorkflowError(f"{entry.describe()}: output {slot} is not an output of the subgraph")
        link_ids = outputs[slot].get("linkIds") or []
        if not link_ids:
            return None
        inner_link = entry.inner.links.get(int(link_ids[0]))
        if inner_link is None:
            raise ComfyUIWorkflowError(
                f"{entry.describe()}: subgraph output {slot} refers to link {link_ids[0]}, "
                "which does not exist"
            )
        if _same_id(inner_link.origin_id, SUBGRAPH_INPUT_NODE):  # an input passed straight through
            return self.resolve_input(entry, inner_link.origin_slot, visited)
        inner = self.by_id.get(f"{entry.exec_id}:{inner_link.origin_id}")
        if inner is None:
            raise ComfyUIWorkflowError(
                f"{entry.describe()}: subgraph output {slot} comes from inner node {inner_link.origin_id}, "
                "which does not exist"
            )
        return self.resolve_output(inner, inner_link.origin_slot, link_type, visited)

    def _resolve_group_output(
        self, entry: ExecNode, slot: int, link_type: Any, visited: set[str]
    ) -> Resolved | None:
        """GroupNodeHandler.updateLink: the inner node behind a group output, past inner Reroutes.

        Unlike a subgraph output, the inner node is not resolved any further: a link from a muted or
        bypassed inner node ends there (and is dropped with that node), as in the frontend.
        """
        assert entry.group is not None
        if slot >= len(entry.group.outputs):
            raise ComfyUIWorkflowError(f"{entry.describe()}: output {slot} is not an output of the group")
        index, origin_slot = entry.group.outputs[slot]
        node = self.by_id.get(f"{entry.exec_id}:{index}")
        while node is not None and node.type == "Reroute":
            hop = self._reroute_source(node, visited)
            if hop is None:
                return None
            node, origin_slot = hop
        if node is None:
            return None
        if node.kind in ("group", "subgraph"):
            return self.resolve_output(node, origin_slot, link_type, visited)
        return ("link", node.exec_id, origin_slot)

    def _reroute_source(self, entry: ExecNode, visited: set[str]) -> tuple[ExecNode, int] | None:
        """The node and output slot feeding a Reroute, across a group instance's inputs."""
        key = f"{entry.exec_id}[R]"
        if key in visited:
            raise ComfyUIWorkflowError(f"{entry.describe()}: circular link through a Reroute (a link loop)")
        visited.add(key)
        if not entry.inputs or entry.inputs[0].link is None:
            return None
        link = self._link(entry, entry.inputs[0].link, "input 0")
        owner = entry.scope.owner
        if owner is not None and _same_id(link.origin_id, SUBGRAPH_INPUT_NODE):
            if link.origin_slot >= len(owner.inputs) or owner.inputs[link.origin_slot].link is None:
                return None
            link = self._link(owner, owner.inputs[link.origin_slot].link, f"input {link.origin_slot}")
            origin = self._node_in(owner, link.origin_id)
        else:
            origin = self._node_in(entry, link.origin_id)
        return None if origin is None else (origin, link.origin_slot)


def _visit(entry: ExecNode, side: str, slot: int, visited: set[str]) -> None:
    """Mark ``side`` slot ``slot`` of ``entry`` as followed; a second visit is a link loop."""
    key = f"{entry.exec_id}[{side}]{slot}"
    if key in visited:
        raise ComfyUIWorkflowError(f"{entry.describe()}: circular link through {side} {slot} (a link loop)")
    visited.add(key)


def _same_id(value: Any, expected: int) -> bool:
    try:
        return int(value) == expected
    except (TypeError, ValueError):
        return False


def _bypass_slot_index(entry: ExecNode, slot: int, link_type: Any) -> int:
    """ExecutableNodeDTO.#getBypassSlotIndex: which input a bypassed node's output passes through."""
    inputs = entry.inputs
    if link_type in ("*", "", None):
        return slot if len(inputs) > slot else (0 if inputs else -1)
    output_type = entry.output_types[slot] if slot < len(entry.output_types) else None
    if slot < len(inputs):
        opposite = inputs[slot].type
        if is_valid_connection(opposite, output_type) and is_valid_connection(opposite, link_type):
            return slot
    for index, candidate in enumerate(inputs):
        if candidate.type == link_type:
            return index
    for index, candidate in enumerate(inputs):
        if is_valid_connection(candidate.type, output_type) and is_valid_connection(
            candidate.type, link_type
        ):
            return index
    return -1


def _primitive_values(ordered: list[ExecNode], by_id: dict[str, ExecNode]) -> dict[str, dict[str, Any]]:
    """PrimitiveNode.applyToGraph: the value each PrimitiveNode writes into the widgets it feeds."""
    pushed: dict[str, dict[str, Any]] = {}
    for entry in ordered:
        if entry.type != "PrimitiveNode":
            continue
        values = entry.node.get("widgets_values")
        if not isinstance(values, list) or not values:
            continue
        outputs = entry.node.get("outputs") or []
        link_ids = list((outputs[0] or {}).get("links") or []) if outputs else []
        seen: set[int] = set()
        while link_ids:
            link_id = int(link_ids.pop())
            link = entry.scope.links.get(link_id)
            if link is None or link_id in seen:
                continue
            seen.add(link_id)
            target = by_id.get(":".join((*entry.scope.path, str(link.target_id))))
            if target is None:
                continue
            if target.type == "Reroute":  # follow reroute chains to the widgets behind them
                for out in target.node.get("outputs") or []:
                    link_ids.extend((out or {}).get("links") or [])
                continue
            saved = [s for s in target.node.get("inputs") or [] if isinstance(s, Mapping)]
            if link.target_slot >= len(saved):
                continue
            slot = saved[link.target_slot]
            name = str((slot.get("widget") or {}).get("name") or slot.get("name"))
            if target.kind in ("subgraph", "group"):
                names = [s.name for s in target.inputs]
                if name in names:
                    target.promoted[names.index(name)] = values[0]
            else:
                pushed.setdefault(target.exec_id, {})[name] = values[0]
    return pushed


def _check_types(ordered: list[ExecNode], object_info: Mapping[str, Any]) -> None:
    missing = [
        entry
        for entry in ordered
        if entry.kind == "real"
        and entry.layout is None
        and not entry.disabled
        and entry.mode not in (MUTED, BYPASSED)
    ]
    if missing:
        lines = []
        for entry in missing:
            props = entry.node.get("properties") or {}
            package = props.get("cnr_id") or props.get("aux_id")
            extra = f"; from package {package!r}" if package else ""
            if props.get("ver"):
                extra += f" version {props['ver']}"
            lines.append(f"  - {entry.describe()}{extra}")
        raise ComfyUIWorkflowError(
            "the server's object_info does not know these node types (custom nodes not installed?):\n"
            + "\n".join(lines)
        )
    for entry in ordered:
        if entry.layout is not None and entry.layout.unsupported and entry.mode not in (MUTED, BYPASSED):
            names = ", ".join(f"{spec.name} ({spec.type})" for spec in entry.layout.unsupported)
            raise ComfyUIWorkflowError(
                f"{entry.describe()}: inputs {names} use a frontend-only widget whose saved value "
                "cannot be converted; export this workflow with 'Export (API)' instead"
            )


def _wrap(value: Any) -> Any:
    return {"__value__": value} if isinstance(value, list) else value


def find_cycle(api_workflow: Mapping[str, Any]) -> list[str] | None:
    """A list of node ids forming a cycle of links in an API-format workflow, or None."""
    state: dict[str, int] = {}
    for start in api_workflow:
        if state.get(start):
            continue
        stack: list[tuple[str, list[str]]] = [(start, _upstream(api_workflow, start))]
        path = [start]
        state[start] = 1
        while stack:
            node_id, pending = stack[-1]
            if not pending:
                state[node_id] = 2
                stack.pop()
                path.pop()
                continue
            nxt = pending.pop()
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, _upstream(api_workflow, nxt)))
    return None


def _upstream(api_workflow: Mapping[str, Any], node_id: str) -> list[str]:
    inputs = (api_workflow.get(node_id) or {}).get("inputs") or {}
    return [
        str(value[0])
        for value in inputs.values()
        if isinstance(value, list) and len(value) == 2 and str(value[0]) in api_workflow
    ]


def ui_to_api(ui_workflow: Mapping[str, Any], object_info: Mapping[str, Any]) -> dict[str, Any]:
    """The API-format prompt the ComfyUI frontend would submit for this web-UI save.

    A save whose structure is broken in a way no specific check names (a field of the wrong type, a
    list too short) is reported as :class:`ComfyUIWorkflowError` too: it cannot pass on a retry.
    """
    if detect_format(ui_workflow) != "ui":
        raise ComfyUIWorkflowError("ui_to_api needs a web UI save (with a 'nodes' list); this is API format")
    try:
        return _ui_to_api(ui_workflow, object_info)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ComfyUIWorkflowError(
            f"the web-UI workflow is malformed and cannot be converted ({type(exc).__name__}: {exc}); "
            "open it in ComfyUI and save it again"
        ) from exc


def _ui_to_api(ui_workflow: Mapping[str, Any], object_info: Mapping[str, Any]) -> dict[str, Any]:
    ordered, by_id = flatten(ui_workflow, object_info)
    _check_types(ordered, object_info)
    pushed = _primitive_values(ordered, by_id)
    for entry in ordered:
        if entry.kind == "subgraph":
            for exec_id, values in proxy_widget_values(entry).items():
                pushed.setdefault(exec_id, {}).update(values)
        elif entry.kind == "group" and entry.group is not None:
            promoted = {entry.inputs[i].name: v for i, v in entry.promoted.items() if i < len(entry.inputs)}
            saved = entry.node.get("widgets_values")
            for exec_id, values in group_widget_values(entry.group, entry.exec_id, saved, promoted).items():
                pushed.setdefault(exec_id, {}).update(values)
    resolver = _Resolver(by_id)
    output: dict[str, Any] = {}
    for entry in ordered:
        if entry.kind != "real" or entry.disabled or entry.mode in (MUTED, BYPASSED):
            continue
        assert entry.layout is not None
        values = widget_values(entry.layout, entry.node.get("widgets_values"))
        fixed = entry.layout.fixed
        for name, value in (pushed.get(entry.exec_id) or {}).items():
            if name in values and name not in fixed:
                values[name] = value
        inputs = {name: js_value(_wrap(value)) for name, value in values.items()}  # copies, as JSON would
        for index, slot in enumerate(entry.inputs):
            if slot.link is None:  # nothing to follow (resolve_input would answer None)
                continue
            resolved = resolver.resolve_input(entry, index, set())
            if resolved is None:
                continue
            kind, target, origin_slot = resolved
            linked = [str(target), int(origin_slot)]
            inputs[slot.name] = js_value(_wrap(target)) if kind == "value" else linked
        title = entry.node.get("title") or node_title(entry.type, object_info.get(entry.type))
        output[entry.exec_id] = {"inputs": inputs, "class_type": entry.type, "_meta": {"title": title}}
    for node in output.values():
        for name, value in list(node["inputs"].items()):
            if isinstance(value, list) and len(value) == 2 and str(value[0]) not in output:
                del node["inputs"][name]
    if not output:
        raise ComfyUIWorkflowError("the workflow has no nodes to run (all are notes, muted or bypassed)")
    output = {exec_id: output[exec_id] for exec_id in prompt_order(ordered, ordered[0].scope, list(output))}
    cycle = find_cycle(output)
    if cycle:
        raise ComfyUIWorkflowError(
            "the workflow has a cycle: " + " -> ".join(f"{i} ({output[i]['class_type']})" for i in cycle)
        )
    return output
