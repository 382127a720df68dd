"""The UI-format graph, flattened: every node of the root graph and of every subgraph instance.

The web UI saves a graph of nodes and links; subgraph instances refer to a definition in
``definitions.subgraphs`` whose own nodes and links live in a nested scope. Like the frontend's
``ExecutableNodeDTO`` map, :func:`flatten` gives each node an *execution id*: its id, prefixed by
the ids of the subgraph instances that contain it (``"12:5"`` is node 5 inside instance 12).
Legacy group node instances (``workflow>NAME``) become nested scopes too: their inner nodes are
numbered by position in the group definition (``"12:0"``, ``"12:1"``...), their inner links are
renumbered and the slots fed from the instance's inputs are linked from node -10, as in a subgraph.

Invariant: link ids are looked up only within the scope (root graph or one subgraph definition)
that owns them, and an execution id is unique across the flattened graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_comfy.exceptions import ComfyUIWorkflowError
from airflow_comfy.workflows._groups import GroupConfig, build_group_config, group_name
from airflow_comfy.workflows.widgets import NodeLayout, cached_layout, widget_values

VIRTUAL_TYPES = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
SUBGRAPH_INPUT_NODE = -10
SUBGRAPH_OUTPUT_NODE = -20
MUTED = 2
BYPASSED = 4


@dataclass(frozen=True, slots=True)
class Link:
    """One link of a scope: ``origin_id``/``origin_slot`` feed ``target_id``/``target_slot``."""

    id: int
    origin_id: Any
    origin_slot: int
    target_id: Any
    target_slot: int
    type: Any


@dataclass(slots=True)
class Slot:
    """One input slot of a node instance, in the frontend's slot order."""

    name: str
    type: Any
    link: int | None


@dataclass(slots=True)
class Scope:
    """The root graph, or one instance of a subgraph definition."""

    nodes: dict[str, dict[str, Any]]
    links: dict[int, Link]
    path: tuple[str, ...] = ()
    owner: ExecNode | None = None
    definition: Mapping[str, Any] | None = None


@dataclass(slots=True)
class ExecNode:
    """A node with its execution id and what the frontend derives from its definition."""

    exec_id: str
    node: dict[str, Any]
    scope: Scope
    kind: str  # "real", "virtual", "subgraph" or "group" (a legacy group node instance)
    inputs: list[Slot]
    output_types: list[Any]
    layout: NodeLayout | None = None
    disabled: bool = False  # inside a muted or bypassed subgraph instance
    inner: Scope | None = None
    promoted: dict[int, Any] = field(default_factory=dict)
    group: GroupConfig | None = None

    @property
    def id(self) -> str:
        return str(self.node.get("id"))

    @property
    def type(self) -> str:
        return str(self.node.get("type"))

    @property
    def mode(self) -> int:
        return int(self.node.get("mode") or 0)

    def describe(self) -> str:
        return f"node {self.exec_id} ({self.type})"


def _link(raw: Any) -> Link:
    if type(raw) is list and len(raw) >= 5:  # the usual form, checked first (cheaper than a Mapping test)
        return Link(int(raw[0]), raw[1], int(raw[2]), raw[3], int(raw[4]), raw[5] if len(raw) > 5 else None)
    if isinstance(raw, Mapping):
        return Link(
            int(raw["id"]),
            raw["origin_id"],
            int(raw["origin_slot"]),
            raw["target_id"],
            int(raw["target_slot"]),
            raw.get("type"),
        )
    if isinstance(raw, list | tuple) and len(raw) >= 5:
        return Link(int(raw[0]), raw[1], int(raw[2]), raw[3], int(raw[4]), raw[5] if len(raw) > 5 else None)
    raise ComfyUIWorkflowError(f"malformed link {raw!r}: expected [id, origin, slot, target, slot, type]")


def _scope(graph: Mapping[str, Any], path: tuple[str, ...], owner: ExecNode | None, where: str) -> Scope:
    nodes: dict[str, dict[str, Any]] = {}
    for node in graph.get("nodes") or []:
        if not (type(node) is dict or isinstance(node, Mapping)) or "id" not in node or "type" not in node:
            raise ComfyUIWorkflowError(f"{where}: every node needs an 'id' and a 'type', got {node!r:.120}")
        nodes[str(node["id"])] = node if type(node) is dict else dict(node)  # read, never changed
    links: dict[int, Link] = {}
    for raw in graph.get("links") or []:
        if raw is None:
            continue
        try:
            link = _link(raw)
        except (KeyError, TypeError, ValueError):
            raise ComfyUIWorkflowError(f"{where}: malformed link {raw!r:.120}") from None
        links[link.id] = link
    return Scope(nodes, links, path, owner, graph if owner else None)


def _saved_inputs(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [slot for slot in node.get("inputs") or () if type(slot) is dict or isinstance(slot, Mapping)]


def _real_slots(layout: NodeLayout, node: Mapping[str, Any]) -> list[Slot]:
    saved = {str(slot.get("name")): slot for slot in _saved_inputs(node)}
    slots = [Slot(spec.name, spec.type, _link_id(saved.get(spec.name))) for spec in layout.inputs]
    for name, slot in saved.items():  # inputs added at runtime by frontend extensions (dynamic inputs)
        if name not in layout.input_names and slot.get("link") is not None:
            slots.append(Slot(name, slot.get("type"), _link_id(slot)))
    return slots


def _link_id(slot: Mapping[str, Any] | None) -> int | None:
    if not slot or slot.get("link") is None:
        return None
    return int(slot["link"])


def flatten(
    workflow: Mapping[str, Any], object_info: Mapping[str, Any]
) -> tuple[list[ExecNode], dict[str, ExecNode]]:
    """All nodes of the graph and of every subgraph instance, in save order, and a map by exec id."""
    definitions = {
        str(sub.get("id")): sub
        for sub in ((workflow.get("definitions") or {}).get("subgraphs") or [])
        if isinstance(sub, Mapping)
    }
    group_nodes = (workflow.get("extra") or {}).get("groupNodes") or {}
    ordered: list[ExecNode] = []
    by_id: dict[str, ExecNode] = {}

    def expand(scope: Scope, disabled: bool, stack: tuple[str, ...]) -> None:
        for node in scope.nodes.values():
            exec_id = ":".join((*scope.path, str(node["id"])))
            node_type = str(node["type"])
            if node_type in definitions:
                if node_type in stack:
                    raise ComfyUIWorkflowError(
                        f"node {exec_id} ({node_type}): the subgraph contains itself (recursive subgraph)"
                    )
                entry = _subgraph_node(exec_id, node, scope, definitions[node_type], disabled)
                ordered.append(entry)
                by_id[exec_id] = entry
                inner_disabled = disabled or entry.mode in (MUTED, BYPASSED)
                entry.inner = _scope(
                    definitions[node_type], (*scope.path, str(node["id"])), entry, f"subgraph {node_type}"
                )
                expand(entry.inner, inner_disabled, (*stack, node_type))
                continue
            name = group_name(node_type)
            if name is not None:
                entry = _group_node(exec_id, node, scope, name, group_nodes, object_info, disabled)
                ordered.append(entry)
                by_id[exec_id] = entry
                assert entry.inner is not None
                expand(entry.inner, disabled or entry.mode in (MUTED, BYPASSED), stack)
                continue
            entry = _plain_node(exec_id, node, scope, object_info, disabled)
            ordered.append(entry)
            by_id[exec_id] = entry

    expand(_scope(workflow, (), None, "workflow"), False, ())
    return ordered, by_id


def _plain_node(
    exec_id: str, node: dict[str, Any], scope: Scope, object_info: Mapping[str, Any], disabled: bool
) -> ExecNode:
    node_type = str(node["type"])
    saved_outputs = [slot.get("type") for slot in node.get("outputs") or [] if isinstance(slot, Mapping)]
    if node_type in VIRTUAL_TYPES:
        slots = [Slot(str(s.get("name")), s.get("type") or "*", _link_id(s)) for s in _saved_inputs(node)]
        return ExecNode(exec_id, node, scope, "virtual", slots, saved_outputs, disabled=disabled)
    node_def = object_info.get(node_type)
    if not isinstance(node_def, Mapping):
        slots = [Slot(str(s.get("name")), s.get("type"), _link_id(s)) for s in _saved_inputs(node)]
        return ExecNode(exec_id, node, scope, "real", slots, saved_outputs, disabled=disabled)
    layout = cached_layout(node_def, node_type)
    outputs = list(node_def.get("output") or saved_outputs)
    return ExecNode(exec_id, node, scope, "real", _real_slots(layout, node), outputs, layout, disabled)


def _group_node(
    exec_id: str,
    node: dict[str, Any],
    scope: Scope,
    name: str,
    group_nodes: Mapping[str, Any],
    object_info: Mapping[str, Any],
    disabled: bool,
) -> ExecNode:
    """A legacy group node instance, with its inner nodes as a nested scope (``"<id>:<index>"``)."""
    where = f"node {exec_id} ({node['type']})"
    if scope.path:
        raise ComfyUIWorkflowError(
            f"{where} is a legacy group node inside a subgraph; the ComfyUI frontend does not support "
            "group nodes inside subgraphs either: convert the group node to a subgraph"
        )
    data = group_nodes.get(name) if isinstance(group_nodes, Mapping) else None
    if not isinstance(data, Mapping):
        raise ComfyUIWorkflowError(
            f"{where} is a legacy group node, but its definition '{name}' is missing from the "
            "workflow's extra.groupNodes; open the workflow in ComfyUI where the group node is defined, "
            "convert it to a subgraph (or ungroup it), and save again"
        )
    try:
        config = build_group_config(name, data, object_info)
    except ComfyUIWorkflowError as exc:
        raise ComfyUIWorkflowError(f"{where}: {exc}") from None
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ComfyUIWorkflowError(
            f"{where}: the definition of group node '{name}' in extra.groupNodes is malformed ({exc!r})"
        ) from None
    saved = _saved_inputs(node)
    slots = [Slot(str(s.get("name")), s.get("type"), _link_id(s)) for s in saved]
    saved_outputs = [s.get("type") for s in node.get("outputs") or [] if isinstance(s, Mapping)]
    outputs = saved_outputs if len(saved_outputs) == len(config.output_types) else list(config.output_types)
    entry = ExecNode(exec_id, node, scope, "group", slots, outputs, disabled=disabled, group=config)
    graph = inner_graph(config, saved)
    entry.inner = _scope(graph, (*scope.path, str(node["id"])), entry, f"group node {name}")
    return entry


def _subgraph_node(
    exec_id: str, node: dict[str, Any], scope: Scope, definition: Mapping[str, Any], disabled: bool
) -> ExecNode:
    declared = [slot for slot in definition.get("inputs") or [] if isinstance(slot, Mapping)]
    saved = _saved_inputs(node)
    saved_by_name = {str(slot.get("name")): slot for slot in saved}
    slots: list[Slot] = []
    for index, declared_slot in enumerate(declared):
        name = str(declared_slot.get("name"))
        saved_slot = saved[index] if index < len(saved) and saved[index].get("name") == name else None
        saved_slot = saved_slot or saved_by_name.get(name)
        slots.append(Slot(name, declared_slot.get("type"), _link_id(saved_slot)))
    outputs = [slot.get("type") for slot in definition.get("outputs") or [] if isinstance(slot, Mapping)]
    entry = ExecNode(exec_id, node, scope, "subgraph", slots, outputs, disabled=disabled)
    entry.promoted = _promoted_values(node, declared, saved)
    return entry


def _promoted_values(
    node: Mapping[str, Any], declared: list[Mapping[str, Any]], saved: list[Mapping[str, Any]]
) -> dict[int, Any]:
    """Values of the widgets promoted from subgraph inputs, by subgraph input index."""
    values = node.get("widgets_values")
    if not isinstance(values, list) or not values:
        return {}
    names = [str(slot.get("name")) for slot in declared]
    widget_inputs = [str(slot.get("name")) for slot in saved if isinstance(slot.get("widget"), Mapping)]
    proxies = (node.get("properties") or {}).get("proxyWidgets")
    promoted: dict[int, Any] = {}
    if isinstance(proxies, list) and len(proxies) == len(values):
        for proxy, value in zip(proxies, values, strict=True):
            is_input = isinstance(proxy, list | tuple) and len(proxy) == 2 and str(proxy[0]) == "-1"
            if is_input and str(proxy[1]) in names:
                promoted[names.index(str(proxy[1]))] = value
        return promoted
    for name, value in zip(widget_inputs, values, strict=False):
        if name in names:
            promoted[names.index(name)] = value
    return promoted


def proxy_widget_values(entry: ExecNode) -> dict[str, dict[str, Any]]:
    """Inner widget values a subgraph instance overrides through ``properties.proxyWidgets``."""
    values = entry.node.get("widgets_values")
    proxies = (entry.node.get("properties") or {}).get("proxyWidgets")
    result: dict[str, dict[str, Any]] = {}
    if not (isinstance(proxies, list) and isinstance(values, list) and len(proxies) == len(values)):
        return result
    for proxy, value in zip(proxies, values, strict=True):
        if isinstance(proxy, list | tuple) and len(proxy) == 2 and str(proxy[0]) != "-1":
            result.setdefault(f"{entry.exec_id}:{proxy[0]}", {})[str(proxy[1])] = value
    return result


def instance_slot(config: GroupConfig, group_input: int, saved_inputs: list[Mapping[str, Any]]) -> int:
    """The instance input slot of group input ``group_input``: by name, else by position."""
    name = config.input_names[group_input]
    if group_input < len(saved_inputs) and saved_inputs[group_input].get("name") in (name, None):
        return group_input
    names = [slot.get("name") for slot in saved_inputs]
    return names.index(name) if names.count(name) == 1 else group_input


def inner_graph(config: GroupConfig, saved_inputs: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One instance's inner nodes (ids ``0..n-1``) and links, as a nested scope (getInputLink)."""
    nodes: list[dict[str, Any]] = []
    links: list[list[Any]] = []
    for index, original in enumerate(config.nodes):
        node = {**original, "id": index}
        inputs = []
        for slot, raw in enumerate(original.get("inputs") or []):
            slot_data = dict(raw) if isinstance(raw, Mapping) else {"name": str(slot)}
            internal = config.links_to.get(index, {}).get(slot)
            external = config.input_map.get(index, {}).get(slot)
            slot_data["link"] = None
            if internal is not None:
                slot_data["link"] = len(links) + 1
                link_type = internal[5] if len(internal) > 5 else slot_data.get("type")
                links.append([len(links) + 1, int(internal[0]), int(internal[1]), index, slot, link_type])
            elif external is not None:
                slot_data["link"] = len(links) + 1
                origin_slot = instance_slot(config, external, saved_inputs)
                links.append(
                    [len(links) + 1, SUBGRAPH_INPUT_NODE, origin_slot, index, slot, slot_data.get("type")]
                )
            inputs.append(slot_data)
        node["inputs"] = inputs
        # Inner outputs keep no links (the group definition is a clipboard copy): PrimitiveNodes
        # inside reach their widgets through the group's widgets, not applyToGraph.
        node["outputs"] = [
            {**o, "links": []} if isinstance(o, Mapping) else o for o in original.get("outputs") or []
        ]
        nodes.append(node)
    return {"nodes": nodes, "links": links}


def group_widget_values(
    config: GroupConfig, exec_id: str, saved_values: Any, promoted: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Inner widget values an instance sets (configure + updateInnerWidgets), by inner exec id.

    ``promoted`` holds the values PrimitiveNodes outside the group pushed into the instance's
    converted widgets, by group input name.
    """
    values = widget_values(config.layout, saved_values)
    values.update({name: value for name, value in promoted.items() if name in values})
    result: dict[str, dict[str, Any]] = {}
    for name, (index, input_name) in config.widget_map.items():
        if name not in values:
            continue
        node = config.nodes[index]
        if node.get("type") == "PrimitiveNode":
            targets = config.primitive_to_widget.get(index, [])
        elif node.get("type") == "Reroute":
            targets = []
            for link in config.links_from.get(index, {}).get(0, []):
                target_slots = config.nodes[int(link[2])].get("inputs") or []
                slot = target_slots[int(link[3])] if int(link[3]) < len(target_slots) else {}
                widget = slot.get("widget") if isinstance(slot, Mapping) else None
                if isinstance(widget, Mapping) and widget.get("name"):
                    targets.append((int(link[2]), str(widget["name"])))
        else:
            targets = [(index, input_name)]
        for target, target_input in targets:
            result.setdefault(f"{exec_id}:{target}", {})[target_input] = values[name]
    return result
