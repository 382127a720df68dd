"""The node classes the stand-in can really run, implemented with Pillow instead of torch.

An IMAGE is a list of RGB ``PIL.Image`` (one per batch item), a MASK a list of ``L`` images.
Each node mirrors what the ComfyUI 0.3.64 node of the same name returns, writes and reports
(file names, UI outputs, ``progress``/preview/text events through the :class:`NodeContext`).

Invariant: a node touches files only through the context's folders, and every wait inside a node
goes through ``ctx.sleep``/``ctx.progress``/``ctx.wait_gate`` so a server stop is honoured promptly
(and an interrupt at the next progress report or node boundary, as in ComfyUI).
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image, ImageFilter, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from airflow_comfy.testing.files import Folders, save_path

Images = list[Image.Image]
NodeResult = tuple[tuple[Any, ...], dict[str, Any] | None]


class NodeContext(Protocol):
    """What a running node may use: its identity, the folders, and the event channel."""

    node_id: str
    prompt_id: str
    prompt: Mapping[str, Any]
    folders: Folders

    def progress(self, value: int, total: int, preview: Image.Image | None = None) -> None: ...

    def text(self, text: str) -> None: ...

    def sleep(self, seconds: float) -> None: ...

    def wait_gate(self, name: str, timeout: float) -> None: ...


@dataclass(frozen=True)
class NodeImpl:
    """How to run one class; ``is_changed`` feeds the cache key (``None`` = inputs decide)."""

    run: Callable[[NodeContext, dict[str, Any]], NodeResult]
    is_changed: Callable[[Folders, Mapping[str, Any]], Any] | None = None


def _always_changed(_folders: Folders, _inputs: Mapping[str, Any]) -> Any:
    return float("nan")  # never equal to itself: the node is never served from the cache


def empty_image(_ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    color = int(i.get("color", 0))
    rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
    size = (int(i["width"]), int(i["height"]))
    return ([Image.new("RGB", size, rgb) for _ in range(int(i.get("batch_size", 1)))],), None


def load_image(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    path = ctx.folders.annotated_path(str(i["image"]))
    images: Images = []
    masks: Images = []
    with Image.open(path) as img:
        for frame in ImageSequence.Iterator(img):
            frame = ImageOps.exif_transpose(frame) or frame
            if images and frame.size != images[0].size:
                continue
            images.append(frame.convert("RGB"))
            if "A" in frame.getbands():
                masks.append(ImageOps.invert(frame.getchannel("A")))
            else:
                masks.append(Image.new("L", (64, 64), 0))
            if img.format == "MPO":
                break
    return (images, masks), None


def load_image_changed(folders: Folders, i: Mapping[str, Any]) -> Any:
    path = folders.annotated_path(str(i.get("image")))
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def image_invert(_ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    return ([ImageOps.invert(im) for im in i["image"]],), None


_RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "bislerp": Image.Resampling.BICUBIC,
}


def image_scale(_ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    width, height = int(i["width"]), int(i["height"])
    out: Images = []
    for im in i["image"]:
        if width == 0 and height == 0:
            out.append(im)
            continue
        w = width or max(1, round(im.width * height / im.height))
        h = height or max(1, round(im.height * width / im.width))
        src = im
        if i.get("crop") == "center":
            old_aspect, new_aspect = im.width / im.height, w / h
            if old_aspect > new_aspect:
                x = round((im.width - im.width * (new_aspect / old_aspect)) / 2)
                src = im.crop((x, 0, im.width - x, im.height))
            elif old_aspect < new_aspect:
                y = round((im.height - im.height * (old_aspect / new_aspect)) / 2)
                src = im.crop((0, y, im.width, im.height - y))
        out.append(src.resize((w, h), _RESAMPLE.get(str(i["upscale_method"]), Image.Resampling.BILINEAR)))
    return (out,), None


def image_blur(_ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    radius, sigma = int(i["blur_radius"]), float(i["sigma"])
    images: Images = i["image"]
    if radius == 0:
        return (images,), None
    for im in images:
        # torch's reflect padding (what ComfyUI uses) needs padding < dimension; W is checked first.
        for dim, size in ((3, im.width), (2, im.height)):
            if radius >= size:
                raise RuntimeError(
                    "Argument #4: Padding size should be less than the corresponding input dimension, "
                    f"but got: padding ({radius}, {radius}) at dimension {dim} of input "
                    f"[{len(images)}, 3, {im.height}, {im.width}]"
                )
    return ([im.filter(ImageFilter.GaussianBlur(sigma)) for im in images],), None


def _png_info(ctx: NodeContext) -> PngInfo:
    info = PngInfo()
    info.add_text("prompt", json.dumps(ctx.prompt))
    return info


def save_image(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    return _save(ctx, i["images"], str(i.get("filename_prefix", "ComfyUI")), "output", compress=4)


def preview_image(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(5))
    return _save(ctx, i["images"], f"ComfyUI_temp_{suffix}", "temp", compress=1)


def _save(ctx: NodeContext, images: Images, prefix: str, folder_type: str, compress: int) -> NodeResult:
    root = ctx.folders.by_type(folder_type)
    assert root is not None
    folder, stem, counter, subfolder = save_path(root, prefix)
    results = []
    for batch_number, im in enumerate(images):
        name = stem.replace("%batch_num%", str(batch_number))
        filename = f"{name}_{counter:05}_.png"
        im.save(folder / filename, pnginfo=_png_info(ctx), compress_level=compress)
        results.append({"filename": filename, "subfolder": subfolder, "type": folder_type})
        counter += 1
    return (), {"images": results}


def save_image_websocket(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    images: Images = i["images"]
    for step, im in enumerate(images):
        ctx.progress(step, len(images), preview=im)
    return (), None


def get_image_size(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    images: Images = i["image"]
    width, height = images[0].size
    ctx.text(f"width: {width}, height: {height}\n batch size: {len(images)}")
    return (width, height, len(images)), None


def preview_any(_ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    source = i.get("source")
    value = "None"
    if isinstance(source, str):
        value = source
    elif isinstance(source, int | float | bool):
        value = str(source)
    elif source is not None:
        try:
            value = json.dumps(source)
        except (TypeError, ValueError):
            value = str(source)
    return (), {"text": [value]}


def stand_in_delay(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    steps = max(1, int(i.get("steps", 1)))
    per_step = float(i.get("seconds", 1.0)) / steps
    for step in range(steps):
        ctx.sleep(per_step)
        ctx.progress(step + 1, steps)
    return (i["image"],), None


def stand_in_gate(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    ctx.wait_gate(str(i.get("gate", "gate")), float(i.get("timeout", 60.0)))
    return (i["image"],), None


def stand_in_fail(_ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    raise RuntimeError(str(i.get("message", "stand-in failure")))


NODES: dict[str, NodeImpl] = {
    "EmptyImage": NodeImpl(empty_image),
    "LoadImage": NodeImpl(load_image, is_changed=load_image_changed),
    "ImageInvert": NodeImpl(image_invert),
    "ImageScale": NodeImpl(image_scale),
    "ImageBlur": NodeImpl(image_blur),
    "SaveImage": NodeImpl(save_image),
    "PreviewImage": NodeImpl(preview_image),
    "SaveImageWebsocket": NodeImpl(save_image_websocket, is_changed=_always_changed),
    "GetImageSize": NodeImpl(get_image_size),
    "PreviewAny": NodeImpl(preview_any),
    "StandInDelay": NodeImpl(stand_in_delay, is_changed=_always_changed),
    "StandInFail": NodeImpl(stand_in_fail, is_changed=_always_changed),
    "StandInGate": NodeImpl(stand_in_gate, is_changed=_always_changed),
}


def _stand_in_info(
    name: str,
    inputs: dict[str, Any],
    output: list[str],
    description: str,
    optional: dict[str, Any] | None = None,
) -> dict[str, Any]:
    info_input: dict[str, Any] = {"required": inputs}
    order: dict[str, list[str]] = {"required": list(inputs)}
    if optional:
        info_input["optional"], order["optional"] = optional, list(optional)
    return {
        "input": info_input,
        "input_order": order,
        "output": output,
        "output_is_list": [False] * len(output),
        "output_name": output,
        "name": name,
        "display_name": name,
        "description": description,
        "python_module": "airflow_comfy.testing",
        "category": "stand-in",
        "output_node": False,
    }


STAND_IN_OBJECT_INFO: dict[str, dict[str, Any]] = {
    "StandInDelay": _stand_in_info(
        "StandInDelay",
        {
            "image": ["IMAGE", {}],
            "seconds": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 3600.0, "step": 0.1}],
            "steps": ["INT", {"default": 10, "min": 1, "max": 10000, "step": 1}],
        },
        ["IMAGE"],
        "Passes the image through after sleeping `seconds` in `steps` steps, reporting progress; "
        "interruptible between steps. Never cached.",
    ),
    "StandInFail": _stand_in_info(
        "StandInFail",
        {"image": ["IMAGE", {}], "message": ["STRING", {"default": "stand-in failure"}]},
        ["IMAGE"],
        "Raises RuntimeError(message) when it runs.",
    ),
    "StandInGate": _stand_in_info(
        "StandInGate",
        {"image": ["IMAGE", {}], "gate": ["STRING", {"default": "gate"}]},
        ["IMAGE"],
        "Passes the image through once the test opens the gate named `gate` (StandInServer.gates); "
        "fails with TimeoutError after `timeout` seconds. Reports no progress, so an interrupt acts "
        "at the next node. Never cached.",
        optional={"timeout": ["FLOAT", {"default": 60.0, "min": 0.1, "max": 3600.0, "step": 0.1}]},
    ),
}


def custom_validators(folders: Folders) -> dict[str, Any]:
    """The file checks ComfyUI's LoadImage.VALIDATE_INPUTS does, bound to this server's folders."""
    from airflow_comfy.protocol.validation import CustomValidator

    def check_image(values: Mapping[str, Any]) -> bool | str:
        image = values.get("image")
        if not folders.exists_annotated(str(image)):
            return f"Invalid image file: {image}"
        return True

    return {"LoadImage": CustomValidator(("image",), check_image)}


def format_value(value: Any) -> Any:
    """How ComfyUI shows one input value in ``execution_error.current_inputs``."""
    if value is None or isinstance(value, int | float | bool | str):
        return value
    if isinstance(value, list) and value and isinstance(value[0], Image.Image):
        w, h = value[0].size
        return f"IMAGE(batch={len(value)}, height={h}, width={w})"
    return str(value)
