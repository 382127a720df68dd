"""The widgets and input slots the ComfyUI frontend gives a node, rebuilt from object_info.

A UI-format save stores widget values *positionally* (``widgets_values``), one per widget the
frontend created, including widgets that never reach the server (the "control_after_generate"
combo after a seed, the combo filter, the image-upload button). To name those values we rebuild
the widget list exactly as the frontend does (ComfyUI_frontend, ``litegraphService.#addInputs``,
``nodeDefOrderingUtil.getOrderedInputSpecs``, ``useIntWidget``/``useComboWidget``,
``valueControlWidgets.addValueControlWidgets``, ``extensions/core/uploadImage.ts``):

- inputs in ``input_order`` (required, then optional), then any others in definition order;
- an input whose type has a core widget (INT, FLOAT, STRING, BOOLEAN, COMBO) and no ``forceInput``
  becomes a widget; every other input is a socket;
- INT inputs get a "control_after_generate" widget after them when the option says so, or, when the
  option is absent, when they are named ``seed`` or ``noise_seed``; COMBO inputs with the option get
  that widget and a "control_filter_list" widget;
- a required combo with ``image_upload``/``video_upload``/``animated_image_upload``/``audio_upload``
  gets an extra "upload" button widget, placed after all other inputs;
- what frontend extensions add (``workflows/frontend.py``): inputs of custom widget types appended
  to some definitions, the auto-refresh toggle and "refresh" button after a remote combo, and
  widgets created with the node (``PreviewAny.preview``). Widgets whose ``serialize`` is false hold
  no slot in ``widgets_values``: saved values are matched, in order, to the other widgets only
  (``LGraphNode.configure``).

Invariant: :func:`node_layout` is a pure function of one node definition (so
:func:`cached_layout` may remember it per definition object); ``Widget.in_prompt`` is
True exactly for the widgets whose values the frontend puts into the API-format ``inputs``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_comfy.workflows.frontend import (
    EXTENSION_INPUTS,
    EXTENSION_WIDGET_TYPES,
    NODE_CREATED_WIDGETS,
    REMOTE_COMBO_DEFAULT,
    REMOTE_REFRESH,
    REMOTE_TOGGLE,
    ExtraWidget,
)

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_NAMES = ("seed", "noise_seed")
MEDIA_UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload", "audio_upload")
# Node types whose media combo gets the upload widget even when the flag is missing (uploadImage.ts).
KNOWN_MEDIA_LOADER_INPUTS = {
    "LoadImage": "image",
    "LoadImageMask": "image",
    "LoadVideo": "file",
    "LoadAudio": "audio",
}
# Frontend-only widget types (registered by frontend extensions) whose stored values we cannot map.
UNSUPPORTED_WIDGET_TYPES = frozenset({"WEBCAM", "LOAD_3D", "LOAD_3D_ANIMATION", "PAINTER", "IMAGECOMPARE"})


@dataclass(frozen=True)
class InputSpec:
    """One input of a node definition, flattened (the frontend's V2 input spec)."""

    name: str
    type: str
    options: Mapping[str, Any]
    optional: bool

    @property
    def is_widget(self) -> bool:
        widget_type = self.type in WIDGET_TYPES or self.type in EXTENSION_WIDGET_TYPES
        return widget_type and not self.options.get("forceInput")

    @property
    def default(self) -> Any:
        """The value a freshly created widget has (used when widgets_values is too short)."""
        if "default" in self.options and self.options["default"] is not None:
            return self.options["default"]
        if self.type == "COMBO":
            choices = combo_choices(self)
            if choices:
                return choices[0]
            return REMOTE_COMBO_DEFAULT if self.options.get("remote") else None
        return {"INT": 0, "FLOAT": 0, "STRING": "", "BOOLEAN": False}.get(self.type)


@dataclass(frozen=True)
class Widget:
    """One widget of a node instance, in creation order.

    ``saved``: it holds a slot in ``widgets_values``; ``extra``: how a widget that frontend
    extensions add behaves (its value, or its default), None for a widget of a declared input.
    """

    name: str
    in_prompt: bool
    spec: InputSpec | None = None
    saved: bool = True
    extra: ExtraWidget | None = None

    @property
    def default(self) -> Any:
        if self.extra is not None:
            return self.extra.value
        return self.spec.default if self.spec is not None else None


def _extra(extra: ExtraWidget, name: str | None = None, spec: InputSpec | None = None) -> Widget:
    return Widget(name or extra.name, extra.in_prompt, spec, extra.saved, extra)


@dataclass(frozen=True)
class NodeLayout:
    """What the frontend builds for one node type: input slots (in slot order) and widgets."""

    inputs: tuple[InputSpec, ...]
    widgets: tuple[Widget, ...]
    specs: Mapping[str, InputSpec]
    unsupported: tuple[InputSpec, ...] = ()
    fixed: frozenset[str] = frozenset()  # widgets that send a fixed value (nothing can set them)
    input_names: frozenset[str] = frozenset()  # names of ``inputs``


def combo_choices(spec: InputSpec) -> list[Any]:
    options = spec.options.get("options")
    return list(options) if isinstance(options, list | tuple) else []


def _flatten(name: str, raw: Any, optional: bool) -> InputSpec:
    if not isinstance(raw, list | tuple) or not raw:
        return InputSpec(name, "*", {}, optional)
    head = raw[0]
    options: Mapping[str, Any] = raw[1] if len(raw) > 1 and isinstance(raw[1], Mapping) else {}
    if isinstance(head, list | tuple):  # legacy combo: the choices are the type (shared, not copied)
        if "options" not in options:
            options = {**options, "options": head}
        return InputSpec(name, "COMBO", options, optional)
    return InputSpec(name, str(head), options, optional)


def definition_inputs(
    node_def: Mapping[str, Any], class_type: str = ""
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Raw required and optional inputs as the frontend holds them: with the media "upload" input added."""
    section = node_def.get("input") or {}
    required = dict(section.get("required") or {})
    optional = dict(section.get("optional") or {})
    for name, widget_type in EXTENSION_INPUTS.get(class_type, ()):
        required[name] = [widget_type, {}]
    upload = _upload_input(required, class_type)
    if upload is not None:
        required["upload"] = upload
    return required, optional


def is_widget_input(raw: Any) -> bool:
    """widgetStore.inputIsWidget: a combo or a core widget type, whatever its ``forceInput`` option."""
    head = raw[0] if isinstance(raw, list | tuple) and raw else None
    return isinstance(head, list | tuple) or head in WIDGET_TYPES or head == "IMAGEUPLOAD"


def ordered_specs(node_def: Mapping[str, Any], class_type: str = "") -> list[InputSpec]:
    """The node's inputs in the order the frontend creates them (getOrderedInputSpecs)."""
    required, optional = definition_inputs(node_def, class_type)
    specs: dict[str, InputSpec] = {}
    for name, raw in required.items():
        specs[name] = _flatten(name, raw, False)
    for name, raw in optional.items():
        specs.setdefault(name, _flatten(name, raw, True))
    order = node_def.get("input_order")
    if not isinstance(order, Mapping):
        return list(specs.values())
    result: list[InputSpec] = []
    placed: set[str] = set()
    for optional, names in ((False, order.get("required") or []), (True, order.get("optional") or [])):
        for name in names:
            spec = specs.get(name)
            if spec is not None and spec.optional == optional and name not in placed:
                result.append(spec)
                placed.add(name)
    result.extend(spec for name, spec in specs.items() if name not in placed)
    return result


def _upload_input(required: Mapping[str, Any], class_type: str) -> list[Any] | None:
    for name, raw in required.items():
        spec = _flatten(name, raw, False)
        if spec.type == "COMBO" and any(spec.options.get(flag) for flag in MEDIA_UPLOAD_OPTIONS):
            return ["IMAGEUPLOAD", {**spec.options, "imageInputName": name}]
    fallback = KNOWN_MEDIA_LOADER_INPUTS.get(class_type)
    if fallback and fallback in required:
        spec = _flatten(fallback, required[fallback], False)
        if spec.type == "COMBO":
            return ["IMAGEUPLOAD", {**spec.options, "imageInputName": fallback}]
    return None


_LAYOUTS: dict[tuple[int, str], tuple[Mapping[str, Any], NodeLayout]] = {}
_LAYOUTS_MAX = 4096


def cached_layout(node_def: Mapping[str, Any], class_type: str) -> NodeLayout:
    """:func:`node_layout`, remembered per definition object (object_info is read only, never changed).

    Keyed by the definition's identity, and the entry keeps the definition alive so the identity
    cannot be reused; bounded (cleared when full), so it never holds more than a few catalogues.
    """
    key = (id(node_def), class_type)
    hit = _LAYOUTS.get(key)
    if hit is not None and hit[0] is node_def:
        return hit[1]
    layout = node_layout(node_def, class_type)
    if len(_LAYOUTS) >= _LAYOUTS_MAX:
        _LAYOUTS.clear()
    _LAYOUTS[key] = (node_def, layout)
    return layout


def node_layout(node_def: Mapping[str, Any], class_type: str = "") -> NodeLayout:
    """Input slots and widgets of a node of this definition, as the frontend creates them."""
    specs = ordered_specs(node_def, class_type)
    sockets = [spec for spec in specs if not spec.is_widget and spec.type != "IMAGEUPLOAD"]
    widget_inputs = [spec for spec in specs if spec.is_widget]
    widgets: list[Widget] = []
    unsupported = [spec for spec in sockets if spec.type in UNSUPPORTED_WIDGET_TYPES]
    for spec in specs:
        if spec.type == "IMAGEUPLOAD":
            widgets.append(Widget(spec.name, False, spec))
            continue
        if not spec.is_widget:
            continue
        if spec.type in EXTENSION_WIDGET_TYPES:
            widgets.append(_extra(EXTENSION_WIDGET_TYPES[spec.type], spec.name, spec))
            continue
        widgets.append(Widget(spec.name, True, spec))
        if spec.type == "COMBO" and isinstance(spec.options.get("remote"), Mapping):
            widgets.append(_extra(REMOTE_TOGGLE))
            if spec.options["remote"].get("refresh_button"):
                widgets.append(_extra(REMOTE_REFRESH))
        control = spec.options.get("control_after_generate")
        if spec.type == "INT" and (control if control is not None else spec.name in SEED_NAMES):
            widgets.append(Widget("control_after_generate", False))
        elif spec.type == "COMBO" and control:
            widgets.append(Widget("control_after_generate", False))
            widgets.append(Widget("control_filter_list", False))
    widgets.extend(_extra(extra) for extra in NODE_CREATED_WIDGETS.get(class_type, ()))
    return NodeLayout(
        inputs=tuple(sockets + widget_inputs),
        input_names=frozenset(spec.name for spec in sockets + widget_inputs),
        widgets=tuple(widgets),
        specs={spec.name: spec for spec in specs},
        unsupported=tuple(unsupported),
        fixed=frozenset(w.name for w in widgets if w.extra is not None and w.extra.fixed),
    )


def _legacy_widget_count(layout: NodeLayout) -> tuple[int, list[InputSpec]]:
    """Count of values a pre-1.16 frontend saved (forceInput inputs had a dummy widget then)."""
    legacy = [
        spec
        for spec in layout.specs.values()
        if spec.is_widget or (spec.type in WIDGET_TYPES and spec.options.get("forceInput"))
    ]
    count = 0
    for spec in legacy:
        control = spec.options.get("control_after_generate")
        count += 2 if (control or (control is None and spec.name in SEED_NAMES)) else 1
    return count, legacy


def widget_values(layout: NodeLayout, saved: Any) -> dict[str, Any]:
    """The value of every prompt widget, from a node's saved ``widgets_values``.

    A list is matched in order to the widgets that hold a slot in it (LGraphNode.configure); a
    dict (some custom nodes save one) by name. Widgets with no saved value keep their default, as a
    new widget would; widgets with a fixed value send it whatever was saved.
    """
    values: dict[str, Any] = {}
    if isinstance(saved, Mapping):
        for widget in layout.widgets:
            if widget.in_prompt:
                values[widget.name] = _value(widget, saved.get(widget.name, widget.default))
        return values
    saved_list: Sequence[Any] = saved if isinstance(saved, list) else []
    saved_list = _migrate_legacy(layout, saved_list)
    position = 0
    for widget in layout.widgets:
        value = widget.default
        if widget.saved:
            if position < len(saved_list):
                value = saved_list[position]
            position += 1
        if widget.in_prompt:
            values[widget.name] = _value(widget, value)
    return values


def _value(widget: Widget, value: Any) -> Any:
    return widget.extra.value if widget.extra is not None and widget.extra.fixed else value


def _migrate_legacy(layout: NodeLayout, saved: Sequence[Any]) -> Sequence[Any]:
    """Drop the dummy values old saves kept for forceInput inputs (migrateWidgetsValues)."""
    if not any(spec.options.get("forceInput") for spec in layout.specs.values()):
        return saved
    count, legacy = _legacy_widget_count(layout)
    if count != len(saved) or count == sum(1 for widget in layout.widgets if widget.saved):
        return saved
    kept: list[Any] = []
    index = 0
    for spec in legacy:
        control = spec.options.get("control_after_generate")
        width = 2 if (control or (control is None and spec.name in SEED_NAMES)) else 1
        if not spec.options.get("forceInput"):
            kept.extend(saved[index : index + width])
        index += width
    return kept


def is_valid_connection(a: Any, b: Any) -> bool:
    """LiteGraph.isValidConnection: equal (case-insensitive), wildcard, or sharing a comma-listed type."""
    if not a or not b or a == "*" or b == "*" or a == b:
        return True
    left = {part.strip().lower() for part in str(a).split(",")}
    right = {part.strip().lower() for part in str(b).split(",")}
    return bool(left & right)
