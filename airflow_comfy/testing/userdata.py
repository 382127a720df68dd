"""The stand-in's user data routes: files the web UI saves for its (single, ``default``) user.

Mirrors ComfyUI 0.3.64's ``app/user_manager.py`` as the recorded transcripts show it
(``tests/data/comfyui-0.3.64/userdata_*.json``): files live under ``<base>/user/default``;

- ``GET /userdata?dir=D[&recurse=true][&full_info=true][&split=true]`` lists the files under ``D``
  (paths relative to ``D``; with ``full_info`` objects with ``path``, ``size``, ``modified`` and
  ``created`` in milliseconds; with ``split`` each path followed by its parts); no ``dir``: 400
  "Directory not provided"; a path leaving the user folder: 403 "Invalid directory"; a missing
  directory: 404 "Directory not found";
- ``GET /userdata/{file}`` answers the file (``/`` in the path must be sent as ``%2F``: the route
  takes one path segment); a missing file is a 404 with an empty body;
- ``POST /userdata/{file}[?overwrite=false][&full_info=true]`` stores the raw body and answers the
  path relative to the user folder (a JSON string), or its file info; 409 "File already exists";
- ``DELETE /userdata/{file}`` answers 204.

Invariant: no route reads or writes outside ``<base>/user/default``.
"""

from __future__ import annotations

import glob
import json
import mimetypes
import os
import urllib.parse
from pathlib import Path
from typing import Any

from aiohttp import web

from airflow_comfy.testing.files import inside

USER = "default"


def user_root(base: Path) -> Path:
    """``<base>/user/default``: where the stand-in keeps its user's data."""
    return base / "user" / USER


def _resolve(root: Path, relative: str) -> Path | None:
    if "%" in relative:
        relative = urllib.parse.unquote(relative)
    path = Path(os.path.abspath(os.path.join(root, relative)))
    return path if inside(path, root) else None


def _file_info(path: Path, relative_to: Path) -> dict[str, Any]:
    stat = path.stat()
    return {
        "path": os.path.relpath(path, relative_to).replace(os.sep, "/"),
        "size": stat.st_size,
        "modified": int(stat.st_mtime * 1000),
        "created": int(stat.st_ctime * 1000),
    }


class UserDataRoutes:
    """Handlers of the /userdata routes over one base directory."""

    def __init__(self, base: Path) -> None:
        self.root = user_root(base)

    def table(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", "/userdata", self.list),
            ("GET", "/userdata/{file}", self.get),
            ("POST", "/userdata/{file}", self.post),
            ("DELETE", "/userdata/{file}", self.delete),
        ]

    async def list(self, request: web.Request) -> web.Response:
        directory = request.rel_url.query.get("dir", "")
        if not directory:
            return web.Response(status=400, text="Directory not provided")
        path = _resolve(self.root, directory)
        if path is None:
            return web.Response(status=403, text="Invalid directory")
        if not path.exists():
            return web.Response(status=404, text="Directory not found")
        query = request.rel_url.query
        recurse = query.get("recurse", "").lower() == "true"
        full_info = query.get("full_info", "").lower() == "true"
        split = query.get("split", "").lower() == "true"
        pattern = (
            os.path.join(glob.escape(str(path)), "**", "*")
            if recurse
            else os.path.join(glob.escape(str(path)), "*")
        )
        results: list[Any] = []
        for name in glob.glob(pattern, recursive=recurse):
            found = Path(name)
            if not found.is_file():
                continue
            if full_info:
                results.append(_file_info(found, path))
                continue
            relative = os.path.relpath(found, path).replace(os.sep, "/")
            results.append([relative, *relative.split("/")] if split else relative)
        return web.json_response(results)

    def _path(self, request: web.Request) -> Path | web.Response:
        name = request.match_info.get("file")
        if not name:
            return web.Response(status=400)
        path = _resolve(self.root, name)
        return web.Response(status=403) if path is None else path

    async def get(self, request: web.Request) -> web.StreamResponse:
        path = self._path(request)
        if isinstance(path, web.Response):
            return path
        if not path.is_file():
            return web.Response(status=404)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return web.Response(body=path.read_bytes(), content_type=content_type)

    async def post(self, request: web.Request) -> web.Response:
        path = self._path(request)
        if isinstance(path, web.Response):
            return path
        overwrite = request.query.get("overwrite", "true") != "false"
        full_info = request.query.get("full_info", "false").lower() == "true"
        if not overwrite and path.exists():
            return web.Response(status=409, text="File already exists")
        body = await request.read()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        if full_info:
            return web.json_response(_file_info(path, self.root))
        return web.json_response(os.path.relpath(path, self.root))

    async def delete(self, request: web.Request) -> web.Response:
        path = self._path(request)
        if isinstance(path, web.Response):
            return path
        if not path.exists():
            return web.Response(status=404)
        path.unlink()
        return web.Response(status=204)


def save_userdata(base: Path, relative: str, content: bytes | str | dict[str, Any]) -> Path:
    """Put a file into a stand-in's user data, as the web UI's "Save" would (tests, demos)."""
    path = _resolve(user_root(base), relative)
    if path is None:
        raise ValueError(f"{relative!r} leaves the user data folder")
    data = json.dumps(content).encode() if isinstance(content, dict) else content
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path
