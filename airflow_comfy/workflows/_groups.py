"""Legacy group nodes (``extra.groupNodes``), rebuilt the way the ComfyUI frontend builds them.

Before subgraphs, the frontend saved "group nodes": a definition ``extra.groupNodes[NAME]`` (the
inner nodes, in execution order, and the links between them as ``[origin index, origin slot,
target index, target slot, original origin id, type]``) and instances of type ``workflow>NAME``
(older saves: ``workflow/NAME``) with their own widget values and input/output slots. Following
ComfyUI_frontend ``src/extensions/core/groupNode.ts`` (``GroupNodeConfig.registerType`` and
``GroupNodeHandler``), :func:`build_group_config` rebuilds, from the definition and object_info:

- the group's node definition: for every inner node in order, its widget inputs (named after the
  input, prefixed with the node title or type when the name is taken), its unlinked socket inputs,
  then (after all nodes) its widgets converted to inputs that are not linked inside the group;
- which group input feeds which inner input slot, and which inner output each group output is;
- which inner widget each group widget sets (PrimitiveNodes inside the group set the widgets they
  feed; an exposed Reroute sets the widgets behind it).

``graph.flatten`` turns each instance into a nested scope built from this configuration.

Invariant: nothing here mutates the workflow or object_info; inner node ``i`` of instance ``G`` is
node ``"G:i"`` in the API prompt, as in the frontend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_comfy.exceptions import ComfyUIWorkflowError
from airflow_comfy.workflows.widgets import (
    SEED_NAMES,
    NodeLayout,
    definition_inputs,
    is_widget_input,
    node_layout,
)

GROUP_PREFIXES = ("workflow>", "workflow/")


def group_name(node_type: str) -> str | None:
    """The group name of a ``workflow>NAME`` / ``workflow/NAME`` node type, else None."""
    for prefix in GROUP_PREFIXES:
        if node_type.startswith(prefix):
            return node_type[len(prefix) :]
    return None


@dataclass
class GroupConfig:
    """What the frontend derives from one ``extra.groupNodes`` entry (GroupNodeConfig)."""

    name: str
    nodes: list[dict[str, Any]]
    links_to: dict[int, dict[int, list[Any]]] = field(default_factory=dict)
    links_from: dict[int, dict[int, list[list[Any]]]] = field(default_factory=dict)
    external_from: dict[int, dict[int, Any]] = field(default_factory=dict)
    input_map: dict[int, dict[int, int]] = field(default_factory=dict)  # inner idx -> slot -> group input
    input_names: list[str] = field(default_factory=list)
    input_types: list[Any] = field(default_factory=list)
    outputs: list[tuple[int, int]] = field(default_factory=list)  # group output -> (inner idx, slot)
    output_types: list[Any] = field(default_factory=list)
    widget_map: dict[str, tuple[int, str]] = field(default_factory=dict)  # group widget -> inner
    primitive_to_widget: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    required: dict[str, Any] = field(default_factory=dict)
    missing: list[tuple[int, str]] = field(default_factory=list)

    @property
    def layout(self) -> NodeLayout:
        """Widgets and slots of an instance, created from the group's node definition."""
        return node_layout({"input": {"required": self.required}}, f"workflow>{self.name}")


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _options(raw: Any) -> dict[str, Any]:
    return dict(raw[1]) if isinstance(raw, list) and len(raw) > 1 and isinstance(raw[1], Mapping) else {}


class _Builder:
    """GroupNodeConfig.registerType, without registering anything."""

    def __init__(self, name: str, data: Mapping[str, Any], object_info: Mapping[str, Any]) -> None:
        nodes = data.get("nodes")
        if not isinstance(nodes, list):
            raise ComfyUIWorkflowError(f"group node definition '{name}' has no 'nodes' list")
        self.data = data
        self.info = object_info
        self.config = GroupConfig(name, [dict(n) if isinstance(n, Mapping) else {} for n in nodes])
        self.seen: dict[str, int] = {}
        self.node_widgets: dict[int, dict[str, str | None]] = {}
        self.primitive_defs: dict[int, list[Any]] = {}
        self.later: list[Callable[[], None]] = []
        self._links()

    def _links(self) -> None:
        cfg = self.config
        for link in self.data.get("links") or []:
            if not isinstance(link, list) or len(link) < 4:
                continue
            src, src_slot, dst, dst_slot = (_int(v) for v in link[:4])
            if src is None or src_slot is None or dst is None or dst_slot is None:
                continue  # a link from outside the group, kept only for "convert to nodes"
            cfg.links_from.setdefault(src, {}).setdefault(src_slot, []).append(link)
            cfg.links_to.setdefault(dst, {})[dst_slot] = link
        for ext in self.data.get("external") or []:
            if isinstance(ext, list) and len(ext) >= 3 and ext[2] is not None:
                index, slot = _int(ext[0]), _int(ext[1])
                if index is not None and slot is not None:
                    cfg.external_from.setdefault(index, {})[slot] = ext[2]

    def build(self) -> GroupConfig:
        for index, node in enumerate(self.config.nodes):
            node_type = str(node.get("type"))
            if group_name(node_type) is not None:
                raise ComfyUIWorkflowError(
                    f"group node '{self.config.name}' contains another group node ({node_type}, inner "
                    f"node {index}); nested group nodes are not supported"
                )
            definition = self._node_def(index, node)
            if definition is None:
                continue
            inputs, outputs = definition
            if inputs:
                self._inputs(index, node, inputs)
            self._outputs(index, node, outputs)
        for step in self.later:
            step()
        return self.config

    def _node_def(self, index: int, node: Mapping[str, Any]) -> tuple[dict[str, Any], list[Any]] | None:
        node_type = str(node.get("type"))
        node_def = self.info.get(node_type)
        if isinstance(node_def, Mapping):
            required, optional = definition_inputs(node_def, node_type)
            return {**required, **{k: v for k, v in optional.items() if k not in required}}, list(
                node_def.get("output") or []
            )
        links_from = self.config.links_from.get(index)
        if node_type == "PrimitiveNode":
            return self._primitive_def(index, node, links_from) if links_from else None
        if node_type == "Reroute":
            return self._reroute_def(index, links_from)
        if node_type not in ("Note", "MarkdownNote"):
            self.config.missing.append((index, node_type))
        return None

    def _primitive_def(
        self, index: int, node: Mapping[str, Any], links_from: dict[int, list[list[Any]]]
    ) -> tuple[dict[str, Any], list[Any]]:
        first = (links_from.get(0) or [[]])[0]
        value_type = first[5] if len(first) > 5 else None
        if value_type == "COMBO":  # use the choices of the widget it feeds
            outputs = node.get("outputs") or [{}]
            source = ((outputs[0] or {}).get("widget") or {}).get("name")
            target = _int(first[2])
            target_type = self.config.nodes[target].get("type") if target is not None else None
            target_def = self.info.get(str(target_type)) or {}
            section = target_def.get("input") or {}
            spec = (section.get("required") or {}).get(source) or (section.get("optional") or {}).get(source)
            value_type = spec[0] if spec else value_type
        config: list[Any] = [value_type, {}]
        self.primitive_defs[index] = config
        return {"value": config}, [value_type]

    def _reroute_def(
        self, index: int, links_from: dict[int, list[list[Any]]] | None
    ) -> tuple[dict[str, Any], list[Any]] | None:
        cfg = self.config
        links_to = cfg.links_to.get(index)
        if links_to and links_from and not cfg.external_from.get(index, {}).get(0):
            return None  # used inside the group only
        reroute_type: Any = "*"
        options: dict[str, Any] = {}
        if links_from:
            for link in links_from.get(0) or []:
                target = cfg.nodes[int(link[2])]
                slots = target.get("inputs") or []
                slot = slots[int(link[3])] if int(link[3]) < len(slots) else {}
                if reroute_type == "*":
                    reroute_type = slot.get("type") or "*"
                widget = slot.get("widget")
                if isinstance(widget, Mapping):
                    section = (self.info.get(str(target.get("type"))) or {}).get("input") or {}
                    spec = (section.get("required") or {}).get(widget.get("name")) or (
                        section.get("optional") or {}
                    ).get(widget.get("name"))
                    options = {**_options(spec), **options}
        elif links_to and links_to.get(0):
            origin = cfg.nodes[int(links_to[0][0])]
            out = (origin.get("outputs") or [])[int(links_to[0][1])]
            reroute_type = out.get("type") or "*"
        else:  # a Reroute used as a pipe
            for link in self.data.get("links") or []:
                if isinstance(link, list) and len(link) > 5 and _int(link[2]) == index:
                    reroute_type = link[5]
                    break
            if reroute_type == "*":
                reroute_type = cfg.external_from.get(index, {}).get(0) or reroute_type
        options["forceInput"] = True
        return {str(reroute_type): [reroute_type, options]}, [reroute_type]

    def _input_config(
        self,
        node: Mapping[str, Any],
        index: int,
        input_name: str,
        raw: Any,
        extra: dict[str, Any] | None = None,
    ) -> tuple[str, Any, Mapping[str, Any]]:
        """GroupNodeConfig.getInputConfig: the group input's name and spec."""
        node_config = ((self.data.get("config") or {}).get(str(index)) or {}).get("input") or {}
        custom = node_config.get(input_name) if isinstance(node_config.get(input_name), Mapping) else {}
        label = next(
            (
                s.get("label")
                for s in node.get("inputs") or []
                if isinstance(s, Mapping) and s.get("name") == input_name
            ),
            None,
        )
        name = (
            custom.get("name")
            if custom.get("name") is not None
            else (label if label is not None else input_name)
        )
        key, prefix = name, ""
        if (node.get("type") == "PrimitiveNode" and node.get("title")) or name in self.seen:
            title = node.get("title")
            prefix = f"{title if title is not None else node.get('type')} "
            key = name = f"{prefix}{input_name}"
            if name in self.seen:
                name = f"{prefix}{self.seen[name]} {input_name}"
        self.seen[key] = self.seen.get(key, 1) + 1
        extra = dict(extra or {})
        if input_name in SEED_NAMES:
            extra["control_after_generate"] = f"{prefix}control_after_generate"
        if isinstance(raw, list) and raw and raw[0] == "IMAGEUPLOAD":
            extra["widget"] = (
                self.node_widgets.get(index, {}).get(_options(raw).get("widget", "image")) or "image"
            )
        config = [raw[0], {**_options(raw), **extra}] if extra and isinstance(raw, list) and raw else raw
        return name, config, custom

    def _add_input(self, index: int, slot: int, name: str, config: Any) -> None:
        cfg = self.config
        cfg.required[name] = config
        cfg.input_map.setdefault(index, {})[slot] = len(cfg.input_names)
        cfg.input_names.append(name)
        cfg.input_types.append(config[0] if isinstance(config, list) and config else None)

    def _inputs(self, index: int, node: Mapping[str, Any], inputs: dict[str, Any]) -> None:
        saved = [s if isinstance(s, Mapping) else {} for s in node.get("inputs") or []]
        widget_names = self.node_widgets.setdefault(index, {})
        slots: list[str] = []
        converted: dict[int, str] = {}
        for input_name, raw in inputs.items():
            if not is_widget_input(raw):
                slots.append(input_name)
                continue
            position = next(
                (
                    i
                    for i, s in enumerate(saved)
                    if s.get("name") == input_name and (s.get("widget") or {}).get("name") == input_name
                ),
                -1,
            )
            if position > -1:  # a widget converted to an input: placed after all nodes' inputs
                converted[position] = input_name
                widget_names[input_name] = None
                continue
            name, config, _ = self._input_config(node, index, input_name, raw)
            self.config.required[name] = config
            widget_names[input_name] = name
            self.config.widget_map[name] = (index, input_name)
        links_to = self.config.links_to.get(index, {})
        for slot, input_name in enumerate(slots):
            if slot in links_to:
                self._primitive_link(links_to[slot], input_name, inputs)
                continue
            name, config, custom = self._input_config(node, index, input_name, inputs[input_name])
            if custom.get("visible") is False:
                continue
            self._add_input(index, slot, name, config)

        def convert() -> None:
            for offset, key in enumerate(sorted(converted, key=str)):  # JS sorts the keys as strings
                input_name, slot = converted[key], len(slots) + offset
                if slot in links_to:
                    self._primitive_link(links_to[slot], input_name, inputs)
                    continue
                name, config, _ = self._input_config(
                    node, index, input_name, inputs[input_name], {"defaultInput": True}
                )
                self.config.widget_map[name] = (index, input_name)
                widget_names[input_name] = name
                self._add_input(index, slot, name, config)

        self.later.append(convert)

    def _primitive_link(self, link: list[Any], input_name: str, inputs: dict[str, Any]) -> None:
        """checkPrimitiveConnection: a PrimitiveNode inside the group feeds this widget."""
        source, target = _int(link[0]), _int(link[2])
        if source is None or target is None or self.config.nodes[source].get("type") != "PrimitiveNode":
            return
        config = self.primitive_defs.get(source)
        if config is None:
            return
        config[1] = _options(inputs.get(input_name))
        widget = self.node_widgets.get(source, {}).get("value")
        if widget:
            config[1]["control_after_generate"] = True
            config[1]["control_prefix"] = widget[:-6]
        self.config.primitive_to_widget.setdefault(source, []).append((target, input_name))

    def _outputs(self, index: int, node: Mapping[str, Any], outputs: list[Any]) -> None:
        cfg = self.config
        node_config = ((self.data.get("config") or {}).get(str(index)) or {}).get("output") or {}
        for slot, output_type in enumerate(outputs):
            linked = slot in cfg.links_from.get(index, {}) and not cfg.external_from.get(index, {}).get(slot)
            custom = node_config.get(str(slot)) if isinstance(node_config.get(str(slot)), Mapping) else {}
            visible = custom.get("visible") if custom.get("visible") is not None else not linked
            if visible:
                cfg.outputs.append((index, slot))
                cfg.output_types.append(output_type)


def build_group_config(name: str, data: Mapping[str, Any], object_info: Mapping[str, Any]) -> GroupConfig:
    """The frontend's view of group definition ``name`` (see the module docstring)."""
    return _Builder(name, data, object_info).build()
