"""What the ComfyUI frontend (1.27.x, the version ComfyUI 0.3.64 pins) does that object_info does not say.

The facts the converter needs to send exactly what the web UI sends, in one place:

- widgets that frontend *extensions* give some node classes (``Comfy.SaveGLB``, ``Comfy.Preview3D``,
  ``Comfy.Preview3DAnimation`` and ``Comfy.AudioWidget`` add an input of a custom widget type to the
  definition; ``Comfy.PreviewAny`` adds a ``preview`` text widget when the node is created), and the
  widgets every *remote* combo gets (an auto-refresh toggle, and a ``refresh`` button when the
  definition asks for one);
- for each such widget: whether its value goes into the prompt (``options.serialize``), whether it
  holds a slot in the saved ``widgets_values`` (``widget.serialize``), and which value it sends;
- the English titles the frontend gives nodes (its node-definition locale, ``data/frontend_labels.json``:
  class name -> label): a node's title is the label when the locale has one, else the definition's
  ``display_name``, else the class name;
- numbers as ``JSON.stringify`` writes them (JavaScript has one number type: ``1.0`` is ``1``).

Invariant: this module holds data and pure functions only; nothing in it reads object_info.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

FRONTEND_VERSION = "1.27.10"


@dataclass(frozen=True)
class ExtraWidget:
    """A widget the frontend creates that object_info does not declare as an input widget.

    ``in_prompt``: its value is sent (the widget's ``options.serialize`` is not false).
    ``saved``: it holds a slot in ``widgets_values`` (the widget's ``serialize`` is not false).
    ``fixed``: it always sends ``value`` (a DOM widget with no value getter sends ``""``);
    otherwise ``value`` is the default, replaced by the saved value.
    """

    name: str
    in_prompt: bool
    saved: bool
    value: Any
    fixed: bool = False


# Inputs that extensions append to a definition's required inputs (beforeRegisterNodeDef), by class.
EXTENSION_INPUTS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "SaveGLB": (("image", "PREVIEW_3D"),),
    "Preview3D": (("image", "PREVIEW_3D"),),
    "Preview3DAnimation": (("image", "PREVIEW_3D_ANIMATION"),),
    **{
        name: (("audioUI", "AUDIO_UI"),)
        for name in ("LoadAudio", "SaveAudio", "PreviewAudio", "SaveAudioMP3", "SaveAudioOpus")
    },
}

# How the widget of each extension widget type behaves (the name is the input's).
EXTENSION_WIDGET_TYPES: Mapping[str, ExtraWidget] = {
    "PREVIEW_3D": ExtraWidget("", in_prompt=True, saved=True, value="", fixed=True),
    "PREVIEW_3D_ANIMATION": ExtraWidget("", in_prompt=True, saved=True, value="", fixed=True),
    "AUDIO_UI": ExtraWidget("", in_prompt=True, saved=False, value="", fixed=True),
}

# Widgets extensions add when a node is created (onNodeCreated), after the input widgets.
NODE_CREATED_WIDGETS: Mapping[str, tuple[ExtraWidget, ...]] = {
    "PreviewAny": (ExtraWidget("preview", in_prompt=True, saved=False, value="", fixed=True),),
}

# Widgets after a remote combo (useRemoteWidget): the toggle always, the button with refresh_button.
REMOTE_TOGGLE = ExtraWidget("Auto-refresh after generation", in_prompt=False, saved=True, value=False)
REMOTE_REFRESH = ExtraWidget("refresh", in_prompt=True, saved=True, value="refresh")
REMOTE_COMBO_DEFAULT = "Loading..."  # the value of a remote combo with no default and no options

_MAX_PLAIN_INTEGER = 1e21  # JavaScript writes numbers from here on with an exponent ("1e+21")


@cache
def frontend_labels() -> Mapping[str, str]:
    """The frontend's English node labels (class name -> label), as its locale has them."""
    path = Path(__file__).with_name("data") / "frontend_labels.json"
    labels: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return labels


def node_title(class_type: str, node_def: Mapping[str, Any] | None) -> str:
    """The title a new node of ``class_type`` gets in the English web UI."""
    label = frontend_labels().get(class_type)
    if label:
        return label
    display_name = node_def.get("display_name") if isinstance(node_def, Mapping) else None
    return str(display_name) if display_name else class_type


def default_titles(class_type: str, node_def: Mapping[str, Any] | None = None) -> set[str]:
    """Every title a node of ``class_type`` has when nobody renamed it, here or in other tools.

    The frontend's label, the definition's ``display_name`` and the class name.
    """
    titles = {class_type}
    label = frontend_labels().get(class_type)
    if label:
        titles.add(label)
    if isinstance(node_def, Mapping) and node_def.get("display_name"):
        titles.add(str(node_def["display_name"]))
    return titles


def js_value(value: Any) -> Any:
    """``value`` as it comes back from ``JSON.parse(JSON.stringify(value))`` in a browser: a copy.

    Whole floats become ints (``1.0`` -> ``1``), NaN and infinities become None; lists and dicts
    are new objects (nothing is shared with ``value``).
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer() and abs(value) < _MAX_PLAIN_INTEGER:
            return int(value)
        return value
    if isinstance(value, list | tuple):
        return [js_value(item) for item in value]
    if isinstance(value, Mapping):
        return {key: js_value(item) for key, item in value.items()}
    return value


def is_array_index(key: str) -> bool:
    """True for keys JavaScript orders first and numerically in an object ("0", "12", not "012")."""
    return key.isdigit() and key.isascii() and (key == "0" or key[0] != "0") and int(key) < 2**32 - 1


def js_key_order(keys: list[str]) -> list[str]:
    """``keys`` in the order a JavaScript object created by inserting them lists them."""
    indices = sorted((key for key in keys if is_array_index(key)), key=int)
    return indices + [key for key in keys if not is_array_index(key)]
