"""The stand-in's user data routes: files the web UI saves for its (single, ``default``) user.

Mirrors ComfyUI 0.3.64's ``app/user_manager.py`` as the recorded transcripts show it
(``tests/data/comfyui-0.3.64/userdata_*.json`` and their README); files live in ``<base>/user/default``:

- ``{file}`` is one path segment: ``/`` inside it is sent as ``%2F``; a name still holding ``%``
  after routing is decoded once more. A path leaving the user folder: 403, empty body. Every route
  on ``{file}`` (and the listing) first creates the parent folder of the path it resolves;
- ``GET /userdata?dir=D`` lists the files (not folders, not dot-files) under ``D``, relative to it
  (``recurse``, ``full_info`` -> ``{path, size, modified, created}`` in float seconds, ``split``);
  400 "Directory not provided", 403 "Invalid directory", 404 "Directory not found";
- ``GET /userdata/{file}`` is a file response (ETag, Range, HEAD); missing: 404 empty; a folder: 403;
- ``POST /userdata/{file}[?overwrite=false][&full_info=true]`` stores the body and answers the path
  relative to the user folder as a JSON string (or the file info); 409 "File already exists"; an
  OS error: 400, empty body, reason "Invalid filename..."; ``DELETE`` answers 204;
- ``POST /userdata/{file}/move/{dest}``; ``GET /v2/userdata?path=P`` (whole tree, folders first);
  ``GET /users`` (single-user: ``{"storage": "server", "migrated": <user folder exists>}``);
- POST or DELETE with an unencoded ``/`` miss every route: 405 "405: Method Not Allowed".

Invariant: no route reads or writes outside ``<base>/user/default`` (except the move to a
destination outside it, which fails with a 500 as on the real server, moving nothing).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import urllib.parse
from pathlib import Path
from typing import Any

from aiohttp import web

from airflow_comfy.testing.files import inside

USER = "default"
BAD_NAME_REASON = 'Invalid filename. Please avoid special characters like :\\/*?"<>|'


def user_root(base: Path) -> Path:
    """``<base>/user/default``: where the stand-in keeps its user's data."""
    return base / "user" / USER


def _resolve(root: Path, relative: str, create_dir: bool = True) -> Path | None:
    if "%" in relative:
        relative = urllib.parse.unquote(relative)
    path = Path(os.path.abspath(os.path.join(root, relative)))
    if not inside(path, root):
        return None
    if create_dir:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _file_info(path: Path, relative_to: Path) -> dict[str, Any]:
    return {
        "path": os.path.relpath(path, relative_to).replace(os.sep, "/"),
        "size": os.path.getsize(path),
        "modified": os.path.getmtime(path),
        "created": os.path.getctime(path),
    }


def _flag(request: web.Request, name: str) -> bool:
    return request.rel_url.query.get(name, "").lower() == "true"


class UserDataRoutes:
    """Handlers of the user data routes over one base directory."""

    def __init__(self, base: Path) -> None:
        self.root = user_root(base)

    def table(self) -> list[tuple[str, str, Any]]:
        unrouted = "/userdata/{file}/{rest:.+}"  # an unencoded "/": the real server answers 405
        return [
            ("GET", "/users", self.users),
            ("GET", "/userdata", self.list),
            ("GET", "/v2/userdata", self.list_v2),
            ("GET", "/userdata/{file}", self.get),
            ("HEAD", "/userdata/{file}", self.get),
            ("POST", "/userdata/{file}", self.post),
            ("DELETE", "/userdata/{file}", self.delete),
            ("POST", "/userdata/{file}/move/{dest}", self.move),
            ("GET", unrouted, self.not_found),
            ("POST", unrouted, self.not_allowed),
            ("DELETE", unrouted, self.not_allowed),
        ]

    async def users(self, _request: web.Request) -> web.Response:
        return web.json_response({"storage": "server", "migrated": self.root.exists()})

    async def not_found(self, _request: web.Request) -> web.Response:
        raise web.HTTPNotFound()  # answered like every unknown route

    async def not_allowed(self, _request: web.Request) -> web.Response:
        return web.Response(status=405, text="405: Method Not Allowed")

    async def list(self, request: web.Request) -> web.Response:
        directory = request.rel_url.query.get("dir", "")
        if not directory:
            return web.Response(status=400, text="Directory not provided")
        path = _resolve(self.root, directory)
        if path is None:
            return web.Response(status=403, text="Invalid directory")
        if not path.exists():
            return web.Response(status=404, text="Directory not found")
        recurse, full_info, split = (
            _flag(request, "recurse"),
            _flag(request, "full_info"),
            _flag(request, "split"),
        )
        parts = (glob.escape(str(path)), "**", "*") if recurse else (glob.escape(str(path)), "*")
        results: list[Any] = []
        for name in glob.glob(os.path.join(*parts), recursive=recurse):
            if not os.path.isfile(name):
                continue
            if full_info:
                results.append(_file_info(Path(name), path))
                continue
            relative = os.path.relpath(name, path).replace(os.sep, "/")
            results.append([relative, *relative.split("/")] if split else relative)
        return web.json_response(results)

    async def list_v2(self, request: web.Request) -> web.Response:
        wanted = urllib.parse.unquote(request.rel_url.query.get("path", ""))
        target = _resolve(self.root, wanted, create_dir=False) if wanted else self.root
        if target is None:
            return web.Response(status=400, text="Invalid path requested")
        if not target.exists():
            if target == self.root:
                return web.json_response([])
            return web.Response(status=404, text="Requested path not found")
        if not target.is_dir():
            return web.Response(status=400, text="Requested path is not a directory")
        results: list[dict[str, Any]] = []
        for top, dirs, files in os.walk(target):
            for name in dirs:
                rel = os.path.relpath(os.path.join(top, name), self.root).replace(os.sep, "/")
                results.append({"name": name, "path": rel, "type": "directory"})
            for name in files:
                full = os.path.join(top, name)
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                stat = os.stat(full)
                results.append(
                    {
                        "name": name,
                        "path": rel,
                        "type": "file",
                        "size": stat.st_size,
                        "modified": stat.st_mtime,
                    }
                )
        results.sort(key=lambda entry: (entry["type"] != "directory", entry["name"].lower()))
        return web.json_response(results)

    def _path(self, request: web.Request, param: str = "file") -> Path | web.Response:
        name = request.match_info.get(param)
        if not name:
            return web.Response(status=400)
        path = _resolve(self.root, name)
        return web.Response(status=403) if path is None else path

    async def get(self, request: web.Request) -> web.StreamResponse:
        path = self._path(request)
        if isinstance(path, web.Response):
            return path
        if not path.exists():
            return web.Response(status=404)
        if path.is_dir():
            return web.Response(status=403, headers={"Content-Type": "application/octet-stream"})
        return web.FileResponse(path)

    async def post(self, request: web.Request) -> web.Response:
        path = self._path(request)
        if isinstance(path, web.Response):
            return path
        overwrite = request.query.get("overwrite", "true") != "false"
        if not overwrite and path.exists():
            return web.Response(status=409, text="File already exists")
        body = await request.read()
        try:
            path.write_bytes(body)
        except OSError:
            return web.Response(status=400, reason=BAD_NAME_REASON)
        return self._answer(request, path)

    def _answer(self, request: web.Request, path: Path) -> web.Response:
        if request.query.get("full_info", "false").lower() == "true":
            return web.json_response(_file_info(path, self.root))
        return web.json_response(os.path.relpath(path, self.root))

    async def delete(self, request: web.Request) -> web.Response:
        path = self._path(request)
        if isinstance(path, web.Response):
            return path
        if not path.exists():
            return web.Response(status=404)
        os.remove(path)  # a folder raises: the real server answers 500 too
        return web.Response(status=204)

    async def move(self, request: web.Request) -> web.Response:
        source = self._path(request)
        if isinstance(source, web.Response):
            return source
        if not source.exists():
            return web.Response(status=404)
        dest = self._path(request, "dest")
        if isinstance(dest, web.Response):  # the real server does not check it: its move fails, 500
            raise RuntimeError("move destination outside the user folder")
        if request.query.get("overwrite", "true") == "false" and dest.exists():
            return web.Response(status=409, text="File already exists")
        shutil.move(source, dest)
        return self._answer(request, dest)


def save_userdata(base: Path, relative: str, content: bytes | str | dict[str, Any]) -> Path:
    """Put a file into a stand-in's user data, as the web UI's "Save" would (tests, demos)."""
    path = _resolve(user_root(base), relative, create_dir=False)
    if path is None:
        raise ValueError(f"{relative!r} leaves the user data folder")
    data = json.dumps(content).encode() if isinstance(content, dict) else content
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path
