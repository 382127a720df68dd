"""A small hostile (or broken) ComfyUI look-alike for the resilience suite.

It answers ComfyUI's routes the operator uses (POST /prompt, GET /history[/<id>], GET /queue,
GET /view, GET /object_info, /ws), with one or more routes replaced by a test: hostile output file
names, bodies that are not JSON, huge or compressed-to-huge JSON, wrong content types, error pages
that echo the request's headers back. Runs on its own event loop thread, bound to 127.0.0.1 and an
ephemeral port; ``stop()`` ends the loop and its thread.

It records every request's method, path and headers (``requests``), so a test can check that the
credentials really were sent (and thus that a scan for them is meaningful).
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from airflow_comfy.testing.loopthread import LoopThread

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_TIMEOUT = 10.0


def history_entry(prompt_id: str, outputs: dict[str, Any]) -> dict[str, Any]:
    """A successful ComfyUI history answer for ``prompt_id`` with these ``outputs``."""
    return {
        prompt_id: {
            "prompt": [0, prompt_id, {}, {}, list(outputs)],
            "outputs": outputs,
            "status": {"status_str": "success", "completed": True, "messages": []},
            "meta": {},
        }
    }


def echo_headers(request: web.Request) -> str:
    """What a debugging proxy's error page shows: every request header, values included."""
    return "\n".join(f"{name}: {value}" for name, value in request.headers.items())


async def stream_json(request: web.Request, size: int, *, declare: bool = False) -> web.StreamResponse:
    """A syntactically valid JSON string of about ``size`` bytes, streamed in 1 MiB chunks.

    With ``declare`` the length is sent as Content-Length; otherwise the body is chunked. A client
    that stops reading ends the stream (the write raises, and the handler returns).
    """
    chunk = b"a" * (1 << 20)
    count = max(1, size // len(chunk))
    head, tail = b'{"junk": "', b'"}'
    headers = {"Content-Type": "application/json"}
    response = web.StreamResponse(headers=headers)
    if declare:
        response.content_length = len(head) + count * len(chunk) + len(tail)
    await response.prepare(request)
    with contextlib.suppress(Exception):  # the client hung up: that is the point
        await response.write(head)
        for _ in range(count):
            await response.write(chunk)
        await response.write(tail)
        await response.write_eof()
    return response


def gzip_bomb(size: int) -> bytes:
    """``{"junk": "aaaa…"}`` of about ``size`` bytes, gzip-compressed (a few hundred KiB).

    Compressed chunk by chunk, so building it never holds ``size`` bytes in memory.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    chunk = b"a" * (1 << 20)
    parts = [compressor.compress(b'{"junk": "')]
    parts += [compressor.compress(chunk) for _ in range(max(1, size // len(chunk)))]
    parts += [compressor.compress(b'"}'), compressor.flush()]
    return b"".join(parts)


class HostileServer:
    """ComfyUI-shaped routes on 127.0.0.1; replace any of them through :attr:`routes`."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {
            "post_prompt": self._post_prompt,
            "history": self._history,
            "history_all": self._history_all,
            "queue": self._queue,
            "view": self._view,
            "object_info": self._object_info,
            "ws": self._ws,
        }
        self.outputs: dict[str, Any] = {}
        self.view_body = b"\x89PNG not really"
        self.submitted: list[str] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.port = 0
        self._loop_thread = LoopThread("hostile-comfy")
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- default behaviour: a tiny, honest ComfyUI ---------------------------------------------------

    async def _post_prompt(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt_id = str(body.get("prompt_id"))
        self.submitted.append(prompt_id)
        return web.json_response({"prompt_id": prompt_id, "number": len(self.submitted), "node_errors": {}})

    async def _history(self, request: web.Request) -> web.StreamResponse:
        prompt_id = request.match_info["prompt_id"]
        if prompt_id not in self.submitted:
            return web.json_response({})
        return web.json_response(history_entry(prompt_id, self.outputs))

    async def _history_all(self, _request: web.Request) -> web.StreamResponse:
        entries: dict[str, Any] = {}
        for prompt_id in self.submitted:
            entries.update(history_entry(prompt_id, self.outputs))
        return web.json_response(entries)

    async def _queue(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response({"queue_running": [], "queue_pending": []})

    async def _view(self, _request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.view_body, content_type="image/png")

    async def _object_info(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response({})

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for _message in socket:  # stays silent; the client falls back to polling
            pass
        return socket

    # -- running -----------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.requests.append((request.method, request.path, dict(request.headers)))
            return await handler(request)

        def route(name: str) -> Handler:
            async def call(request: web.Request) -> web.StreamResponse:
                return await self.routes[name](request)

            return call

        app = web.Application(middlewares=[record])
        for prefix in ("", "/api"):
            app.router.add_post(prefix + "/prompt", route("post_prompt"))
            app.router.add_get(prefix + "/history/{prompt_id}", route("history"))
            app.router.add_get(prefix + "/history", route("history_all"))
            app.router.add_get(prefix + "/queue", route("queue"))
            app.router.add_get(prefix + "/view", route("view"))
            app.router.add_get(prefix + "/object_info", route("object_info"))
            app.router.add_get(prefix + "/ws", route("ws"))
        return app

    async def _astart(self) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[union-attr]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _astop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await asyncio.get_running_loop().shutdown_default_executor()

    def start(self) -> HostileServer:
        self._loop_thread.start()
        self._loop_thread.call(self._astart(), _TIMEOUT)
        return self

    def stop(self) -> None:
        self._loop_thread.stop(self._astop(), _TIMEOUT)

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
