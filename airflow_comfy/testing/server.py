"""The stand-in's HTTP routes, mirroring ComfyUI 0.3.64's ``server.py`` answers byte-for-shape.

Every route exists both at ``/x`` and ``/api/x``. Malformed bodies make the handler raise, which
aiohttp answers with the same ``500 Internal Server Error`` text/plain page as the real server.
Unknown routes answer 404 with an empty body.

Invariant: handlers only read and change state through :class:`StandInState` (engine, folders,
faults, hub), so a restart that swaps the engine is seen by every route at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import ipaddress
import mimetypes
import os
import socket
import sys
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

from airflow_comfy.protocol import urls
from airflow_comfy.protocol.validation import validate_prompt
from airflow_comfy.testing.catalog import object_info
from airflow_comfy.testing.engine import Engine
from airflow_comfy.testing.faults import INTERNAL_ERROR_TEXT, Faults
from airflow_comfy.testing.files import Folders, inside
from airflow_comfy.testing.hub import SERVER_FEATURES, Hub
from airflow_comfy.testing.nodes import custom_validators
from airflow_comfy.testing.userdata import UserDataRoutes

MAX_UPLOAD_SIZE = 104857600
MODEL_FOLDERS = [
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class StandInState:
    """Everything the routes need; ``engine`` is replaced on restart."""

    folders: Folders
    engine: Engine
    hub: Hub
    faults: Faults
    submissions: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def _origin_mismatch(request: web.Request) -> bool:
    """ComfyUI's anti-CSRF rule: on a loopback Host, Origin's host[:port] must equal Host's."""
    host, origin = request.headers.get("Host"), request.headers.get("Origin")
    if host is None or origin is None:
        return False
    host_domain = host.lower()
    parsed = urllib.parse.urlparse(origin)
    origin_domain: str | None = parsed.netloc.lower()
    host_parsed = urllib.parse.urlsplit("//" + host_domain)
    loopback = _is_loopback(host_parsed.hostname)
    if parsed.port is None:
        host_domain = host_parsed.hostname or ""
    if host_parsed.port is None:
        origin_domain = parsed.hostname
    return bool(loopback and host_domain and origin_domain and host_domain != origin_domain)


def make_app(state: StandInState) -> web.Application:
    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        state.requests.append((request.method, request.path))
        faults = state.faults
        if faults.delay_seconds:
            await asyncio.sleep(faults.delay_seconds)
        status = faults.take_failure(request.path)
        if status is None and request.path in (urls.WS, "/api" + urls.WS):
            status = faults.websocket_refusal
        if status is not None:
            if status == 500:
                return web.Response(status=500, text=INTERNAL_ERROR_TEXT)
            headers = {"Retry-After": "1"} if status == 429 else None
            return web.Response(status=status, headers=headers)
        if faults.stale_history and request.path.startswith(urls.HISTORY + "/") and not request.query_string:
            return web.json_response({})
        if _origin_mismatch(request):
            return web.Response(status=403)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return web.Response(status=404, headers={"Content-Type": "application/octet-stream"})

    app = web.Application(middlewares=[gate], client_max_size=MAX_UPLOAD_SIZE)
    routes = _Routes(state)
    table = [
        ("GET", urls.WS, state.hub.handle),
        ("GET", "/embeddings", routes.embeddings),
        ("GET", "/models", routes.models),
        ("GET", "/models/{folder}", routes.models_folder),
        ("POST", urls.UPLOAD_IMAGE, routes.upload_image),
        ("GET", urls.VIEW, routes.view),
        ("GET", urls.SYSTEM_STATS, routes.system_stats),
        ("GET", urls.FEATURES, routes.features),
        ("GET", urls.PROMPT, routes.get_prompt),
        ("POST", urls.PROMPT, routes.post_prompt),
        ("GET", urls.OBJECT_INFO, routes.object_info),
        ("GET", urls.OBJECT_INFO + "/{node_class}", routes.object_info_node),
        ("GET", urls.HISTORY, routes.history),
        ("GET", urls.HISTORY + "/{prompt_id}", routes.history_one),
        ("POST", urls.HISTORY, routes.post_history),
        ("GET", urls.QUEUE, routes.queue),
        ("POST", urls.QUEUE, routes.post_queue),
        ("POST", urls.INTERRUPT, routes.interrupt),
        ("POST", urls.FREE, routes.free),
        *UserDataRoutes(state.folders.base).table(),
    ]
    for method, path, handler in table:
        app.router.add_route(method, "/api" + path, handler)
        app.router.add_route(method, path, handler)
    return app


class _Routes:
    def __init__(self, state: StandInState) -> None:
        self.state = state

    @property
    def engine(self) -> Engine:
        return self.state.engine

    async def embeddings(self, _request: web.Request) -> web.Response:
        return web.json_response([])

    async def models(self, _request: web.Request) -> web.Response:
        return web.json_response(MODEL_FOLDERS)

    async def models_folder(self, request: web.Request) -> web.Response:
        if request.match_info["folder"] not in MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response([])

    async def system_stats(self, _request: web.Request) -> web.Response:
        try:
            ram_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            ram_free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            ram_total = ram_free = 0
        system = {
            "os": os.name,
            "ram_total": ram_total,
            "ram_free": ram_free,
            "comfyui_version": "0.3.64",
            "required_frontend_version": "1.27.10",
            "installed_templates_version": "0.1.95",
            "required_templates_version": "0.1.95",
            "python_version": sys.version,
            "pytorch_version": "none (airflow-comfy stand-in)",
            "embedded_python": False,
            # Like ComfyUI's own (its command line): one stand-in is told from another by its folder.
            "argv": ["main.py", "--base-directory", str(self.state.folders.base)],
        }
        device = {"name": "cpu", "type": "cpu", "index": None, "vram_total": ram_total, "vram_free": ram_free}
        device.update(torch_vram_total=ram_total, torch_vram_free=ram_free)
        return web.json_response({"system": system, "devices": [device]})

    async def features(self, _request: web.Request) -> web.Response:
        return web.json_response(SERVER_FEATURES)

    async def get_prompt(self, _request: web.Request) -> web.Response:
        return web.json_response(self.engine.queue_info())

    async def post_prompt(self, request: web.Request) -> web.Response:
        data = await request.json()
        engine = self.engine
        if "number" in data:
            number: Any = float(data["number"])
        else:
            number = engine.next_number(bool(data.get("front")))
        if "prompt" not in data:
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided"}
            return web.json_response({"error": {**error, "extra_info": {}}, "node_errors": {}}, status=400)
        prompt_id = str(data.get("prompt_id", uuid.uuid4()))
        folders = self.state.folders
        result = validate_prompt(
            data["prompt"],
            object_info(folders),
            custom_validators=custom_validators(folders),
            partial_execution_targets=data.get("partial_execution_targets"),
            check_v3_combos=False,
        )
        extra = data.get("extra_data", {})
        if "client_id" in data:
            extra["client_id"] = data["client_id"]
        if not result.ok:
            return web.json_response(result.body(), status=400)
        engine.put((number, prompt_id, result.prompt, extra, result.good_outputs))
        self.state.submissions.append(prompt_id)
        return web.json_response(
            {"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors}
        )

    async def object_info(self, _request: web.Request) -> web.Response:
        info = await asyncio.to_thread(object_info, self.state.folders)
        return web.json_response(info)

    async def object_info_node(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        info = object_info(self.state.folders)
        return web.json_response({name: info[name]} if name in info else {})

    async def history(self, request: web.Request) -> web.Response:
        query = request.rel_url.query
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query["offset"]) if "offset" in query else -1
        body = self.engine.get_history(max_items=max_items, offset=offset)
        return web.json_response(body)

    async def history_one(self, request: web.Request) -> web.Response:
        return web.json_response(self.engine.get_history(prompt_id=request.match_info["prompt_id"]))

    async def post_history(self, request: web.Request) -> web.Response:
        data = await request.json()
        if data.get("clear"):
            self.engine.wipe_history()
        if "delete" in data:
            for prompt_id in data["delete"]:
                self.engine.delete_history_item(prompt_id)
        return web.Response(status=200)

    async def queue(self, _request: web.Request) -> web.Response:
        running, pending = self.engine.current_queue()
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def post_queue(self, request: web.Request) -> web.Response:
        data = await request.json()
        if data.get("clear"):
            self.engine.wipe_queue()
        if "delete" in data:
            for prompt_id in data["delete"]:
                self.engine.delete_queue_item(prompt_id)
        return web.Response(status=200)

    async def interrupt(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except ValueError:
            data = {}
        prompt_id = data.get("prompt_id")
        if not prompt_id or prompt_id in self.engine.running_ids():
            self.engine.interrupt.set()
        return web.Response(status=200)

    async def free(self, request: web.Request) -> web.Response:
        data = await request.json()
        if data.get("unload_models", False):
            self.engine.set_flag("unload_models", True)
        if data.get("free_memory", False):
            self.engine.set_flag("free_memory", True)
        return web.Response(status=200)

    async def view(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        folders = self.state.folders
        filename, output_dir = folders.annotated(query["filename"])
        if not filename:
            return web.Response(status=400)
        if filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        if output_dir is None:
            output_dir = folders.by_type(query.get("type", "output"))
        if output_dir is None:
            return web.Response(status=400)
        if "subfolder" in query:
            full = os.path.join(output_dir, query["subfolder"])
            if not inside(full, output_dir):
                return web.Response(status=403)
            output_dir = full
        filename = os.path.basename(filename)
        path = os.path.join(output_dir, filename)
        if not os.path.isfile(path):
            return web.Response(status=404)
        disposition = {"Content-Disposition": f'filename="{filename}"'}
        channel = query.get("channel", "rgba")
        if "preview" in query or channel in ("rgb", "a"):
            body, content_type = await asyncio.to_thread(_reencode, path, query.get("preview"), channel)
            return web.Response(body=body, content_type=content_type, headers=disposition)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in {
            "text/html",
            "text/html-sandboxed",
            "application/xhtml+xml",
            "text/javascript",
            "text/css",
        }:
            content_type = "application/octet-stream"
        return web.FileResponse(path, headers={**disposition, "Content-Type": content_type})

    async def upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        folder_type = str(post.get("type") or "input")
        upload_dir = self.state.folders.by_type(folder_type) or self.state.folders.input
        subfolder = str(post.get("subfolder", ""))
        overwrite = str(post.get("overwrite")) in ("true", "1")
        data = image.file.read()
        name = await asyncio.to_thread(_store_upload, upload_dir, subfolder, image.filename, data, overwrite)
        if name is None:
            return web.Response(status=400)
        return web.json_response({"name": name, "subfolder": subfolder, "type": folder_type})


def _store_upload(upload_dir: Any, subfolder: str, filename: str, data: bytes, overwrite: bool) -> str | None:
    """Write an upload like ComfyUI: rename ``name (N).ext`` on conflict, reuse identical bytes."""
    folder = os.path.join(upload_dir, os.path.normpath(subfolder))
    path = os.path.abspath(os.path.join(folder, filename))
    if not inside(path, upload_dir) or os.path.abspath(path) == os.path.abspath(upload_dir):
        return None
    os.makedirs(folder, exist_ok=True)
    stem, ext = os.path.splitext(filename)
    counter = 1
    while not overwrite and os.path.exists(path):
        with open(path, "rb") as existing:
            if hashlib.sha256(existing.read()).digest() == hashlib.sha256(data).digest():
                return filename
        filename = f"{stem} ({counter}){ext}"
        path = os.path.join(folder, filename)
        counter += 1
    with open(path, "wb") as out:
        out.write(data)
    return filename


def _reencode(path: str, preview: str | None, channel: str) -> tuple[bytes, str]:
    """/view's ``preview=fmt;quality`` and ``channel=rgb|a`` re-encodings."""
    buffer = io.BytesIO()
    with Image.open(path) as img:
        if preview is not None:
            info = preview.split(";")
            fmt = info[0] if info[0] in ("webp", "jpeg") and "a" not in channel else "webp"
            quality = int(info[-1]) if info[-1].isdigit() else 90
            out = img.convert("RGB") if fmt == "jpeg" or channel == "rgb" else img
            out.save(buffer, format=fmt, quality=quality)
            return buffer.getvalue(), f"image/{fmt}"
        if channel == "rgb":
            img.convert("RGB").save(buffer, format="PNG")
        else:
            alpha = img.getchannel("A") if img.mode == "RGBA" else Image.new("L", img.size, 255)
            out = Image.new("RGBA", img.size)
            out.putalpha(alpha)
            out.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"
