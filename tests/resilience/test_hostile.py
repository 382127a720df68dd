"""A hostile or broken server (``resilience.hostile``): hostile output names, bodies that are not JSON,
huge and compressed-to-huge JSON, wrong content types, error pages that echo the credentials back.

What must hold: nothing is written outside ``output_dir``; memory stays bounded (``tracemalloc``
peak while the task runs); the error says what is wrong and names the URL; the credentials, which
the server did receive, show up nowhere (autouse ``guard``). Runs once per kind of credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from operators.support import image_workflow

from airflow_comfy.exceptions import (
    ComfyUIAuthError,
    ComfyUIConnectionError,
    ComfyUIResponseError,
    ComfyUITimeoutError,
)
from airflow_comfy.hooks.comfyui import ComfyUIHook
from airflow_comfy.hooks.transport import MAX_JSON_BYTES
from resilience.hostile import HostileServer, echo_headers, gzip_bomb, history_entry, stream_json
from resilience.support import (
    BASIC_CREDENTIAL,
    FAST_EXTRA,
    LOGIN,
    PASSWORD,
    SECRETS,
    Guard,
    connection_env,
    find_secrets,
    make_op,
    run_op,
)

HUGE = 300 * 1024 * 1024
MEMORY_BOUND = 100 * 1024 * 1024
WORKFLOW = image_workflow("h/img")


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    with HostileServer() as server:
        yield server


@pytest.fixture
def hostile_conn(hostile: HostileServer, auth: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    conn_id, expected = connection_env(monkeypatch, hostile.url, auth)
    yield conn_id
    # The credentials really went to the server: a scan that finds none of them means something.
    assert hostile.requests, "the hostile server saw no request"
    for _method, _path, headers in hostile.requests:
        assert all(headers.get(name) == value for name, value in expected.items())


def op_for(conn_id: str, **kwargs: Any) -> Any:
    return make_op(conn_id, WORKFLOW, validate=False, wait_mode="polling", **kwargs)


def files_under(root: Path) -> set[Path]:
    return {Path(d, name) for d, dirs, files in os.walk(root) for name in [*dirs, *files]}


def once_submitted(server: HostileServer, handler: Callable[[web.Request], Any]) -> Callable[..., Any]:
    """``/history`` answers ``{}`` until the prompt is submitted (so the re-attach check passes), then ``handler``."""

    async def history(request: web.Request) -> web.StreamResponse:
        if request.match_info["prompt_id"] not in server.submitted:
            return web.json_response({})
        return await handler(request)

    return history


def measured(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``fn()`` and the peak of memory allocated while it ran."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = fn()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


# --- output names ----------------------------------------------------------------------------------


def test_hostile_output_names_stay_inside_output_dir(
    hostile: HostileServer, hostile_conn: str, guard: Guard, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    names = {
        "dotdot": ("", "../../outside/dotdot.png"),
        "absolute": ("", str(outside / "absolute.png")),
        "backslashes": ("", "..\\..\\outside\\backslash.png"),
        "nul": ("", "nul\x00byte.png"),
        "long": ("", "x" * 1000 + ".png"),
        "long_multibyte": ("", "é" * 300 + ".png"),
        "only_dots": ("", ".."),
        "symlink_like": ("", "link -> ../../outside/target"),
        "sub_dotdot": ("../../outside", "sub.png"),
        "sub_absolute": (str(outside), "subabs.png"),
        "drive": ("C:\\Windows", "D:\\evil.png"),
    }
    hostile.outputs = {
        "9": {"images": [{"filename": f, "subfolder": s, "type": "output"} for s, f in names.values()]}
    }
    before = files_under(tmp_path)
    ti = guard.ti()

    paths, _took = run_op(op_for(hostile_conn, output_dir=str(out)), ti)

    assert isinstance(paths, list), paths
    assert len(paths) == len(names)
    root = out.resolve()
    for path in paths:
        resolved = Path(path).resolve()
        assert root in resolved.parents, path
        assert resolved.read_bytes() == hostile.view_body
        assert len(resolved.name.encode()) <= 255
    written = files_under(tmp_path) - before
    assert written and all(p == out or root in p.resolve().parents for p in written), sorted(written)
    assert files_under(outside) == set()
    assert len(set(paths)) == len(paths)  # no two outputs were written over each other
    for record in ti.xcoms["outputs"]:  # the server paths handed downstream are relative, too
        assert not record["server_path"].startswith("/") and ".." not in record["server_path"].split("/")


def test_output_dir_with_a_planted_symlink_is_refused(
    hostile: HostileServer, hostile_conn: str, guard: Guard, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "renders").symlink_to(outside, target_is_directory=True)
    hostile.outputs = {"9": {"images": [{"filename": "a.png", "subfolder": "renders", "type": "output"}]}}

    error, _took = run_op(op_for(hostile_conn, output_dir=str(out)), guard.ti())

    guard.seen(error)
    assert isinstance(error, Exception) and not isinstance(error, list), error
    assert "refusing to write 'a.png' outside" in str(error)
    assert files_under(outside) == set()


# --- bodies that are not what ComfyUI sends ------------------------------------------------------------


def test_login_page_instead_of_json_is_a_clear_error(
    hostile: HostileServer, hostile_conn: str, guard: Guard
) -> None:
    async def login_page(request: web.Request) -> web.StreamResponse:
        return web.Response(
            text="<html><body><form>Please log in</form></body></html>", content_type="text/html"
        )

    hostile.routes["history"] = once_submitted(hostile, login_page)
    ti = guard.ti()

    error, took = run_op(op_for(hostile_conn, unreachable_grace=1.0), ti)

    guard.seen(error)
    assert isinstance(error, ComfyUIResponseError), error
    message = str(error)
    assert f"ComfyUI GET {hostile.url}/history/{ti.xcoms['prompt_id']} answered an HTML page" in message
    assert "is this URL a ComfyUI server and not a login page or another service?" in message
    assert "Please log in" in message  # a short excerpt, to recognise the page
    assert "unreachable grace of 1 s" in message  # a garbage answer is transient until the grace ends
    assert took >= 1.0
    assert len(hostile.submitted) == 1


@pytest.mark.parametrize(
    "route",
    ["history", "post_prompt"],
)
def test_error_page_echoing_the_credentials_does_not_leak_them(
    hostile: HostileServer, hostile_conn: str, guard: Guard, route: str
) -> None:
    """A debugging proxy's 403 page shows the request's headers: the excerpt in the error is scrubbed."""

    async def echo(request: web.Request) -> web.StreamResponse:
        status = 400 if route == "post_prompt" else 403
        return web.Response(status=status, text="Forbidden. You sent:\n" + echo_headers(request))

    hostile.routes[route] = once_submitted(hostile, echo) if route == "history" else echo
    ti = guard.ti()

    error, took = run_op(op_for(hostile_conn), ti)

    assert isinstance(error, ComfyUIAuthError if route == "history" else Exception), error
    assert "You sent" in str(error) and "***" in str(error)  # the excerpt is there, the secret is not
    assert not find_secrets([str(error), repr(vars(error))], SECRETS), str(error)
    guard.seen(error)
    assert took < 60  # at once, generously: not retried for the unreachable grace (300 s by default)


def test_wrong_content_types_are_tolerated(
    hostile: HostileServer, hostile_conn: str, guard: Guard, tmp_path: Path
) -> None:
    """JSON labelled text/plain, an image labelled text/html: ComfyUI's own quirks; the task succeeds."""

    async def plain_history(request: web.Request) -> web.StreamResponse:
        entry = history_entry(request.match_info["prompt_id"], hostile.outputs)
        return web.Response(text=web.json_response(entry).text, content_type="text/plain")

    async def html_view(request: web.Request) -> web.StreamResponse:
        return web.Response(body=hostile.view_body, content_type="text/html")

    hostile.outputs = {"9": {"images": [{"filename": "ok.png", "subfolder": "h", "type": "output"}]}}
    hostile.routes["history"] = once_submitted(hostile, plain_history)
    hostile.routes["view"] = html_view

    paths, _took = run_op(op_for(hostile_conn, output_dir=str(tmp_path / "out")), guard.ti())

    assert paths == [str(tmp_path / "out" / "h" / "ok.png")], paths
    assert Path(paths[0]).read_bytes() == hostile.view_body


@pytest.mark.parametrize("kind", ["chunked", "declared", "gzip_bomb"])
def test_huge_json_is_refused_with_bounded_memory(
    hostile: HostileServer, hostile_conn: str, guard: Guard, kind: str
) -> None:
    bomb = gzip_bomb(HUGE) if kind == "gzip_bomb" else b""

    async def huge(request: web.Request) -> web.StreamResponse:
        if kind == "gzip_bomb":
            headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
            return web.Response(body=bomb, headers=headers)
        return await stream_json(request, HUGE, declare=kind == "declared")

    hostile.routes["history"] = once_submitted(hostile, huge)
    ti = guard.ti()

    (error, took), peak = measured(lambda: run_op(op_for(hostile_conn, unreachable_grace=1.0), ti))

    guard.seen(error)
    assert isinstance(error, ComfyUIResponseError), error
    message = str(error)
    assert f"ComfyUI GET {hostile.url}/history/{ti.xcoms['prompt_id']} answered" in message
    assert (
        ("refusing to read it" in message)
        if kind != "declared"
        else ("bytes a JSON answer may have" in message)
    )
    assert peak < MEMORY_BOUND, f"{peak / 2**20:.0f} MiB allocated while refusing a {HUGE >> 20} MiB answer"
    assert MAX_JSON_BYTES < MEMORY_BOUND
    assert took < 60


# --- an overloaded server ------------------------------------------------------------------------------


def test_slow_submission_is_never_sent_twice(
    hostile: HostileServer, auth: str, guard: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id, _ = connection_env(monkeypatch, hostile.url, auth, read_timeout=0.3, max_retries=2)
    post_prompt, history, queue = (
        hostile.routes["post_prompt"],
        hostile.routes["history"],
        hostile.routes["queue"],
    )

    def slow(handler: Callable[[web.Request], Any]) -> Callable[[web.Request], Any]:
        async def answer(request: web.Request) -> web.StreamResponse:
            if request.method == "POST":
                await request.read()  # received (and, on a real server, queued) before the slow part
            response = await handler(request)
            await asyncio.sleep(0.6)  # overloaded: the answer comes after the client's read timeout
            return response

        return answer

    hostile.routes.update(post_prompt=slow(post_prompt), history=slow(history), queue=slow(queue))

    error, _took = run_op(op_for(conn_id, reattach=False), guard.ti())

    guard.seen(error)
    assert isinstance(error, ComfyUITimeoutError), error
    assert len(hostile.submitted) <= 1, hostile.submitted


# --- credentials written into the host URL --------------------------------------------------------


def test_credentials_in_the_host_url_are_sent_as_basic_auth_and_shown_nowhere(
    hostile: HostileServer, guard: Guard, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    conn = {"conn_type": "comfyui", "host": f"http://{LOGIN}:{PASSWORD}@127.0.0.1:{hostile.port}"}
    monkeypatch.setenv("AIRFLOW_CONN_COMFY_URL_CREDS", json.dumps({**conn, "extra": FAST_EXTRA}))
    hostile.outputs = {"9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}}
    ti = guard.ti()

    paths, _took = run_op(op_for("comfy_url_creds", output_dir=tmp_path), ti)

    assert [Path(p).name for p in paths] == ["a.png"], paths
    assert hostile.requests and all(
        headers.get("Authorization") == f"Basic {BASIC_CREDENTIAL}" for _m, _p, headers in hostile.requests
    )
    assert ti.xcoms["comfyui_url"] == hostile.url  # no user info in the XCom
    hostile.routes["post_prompt"] = _forbidden
    error, _took = run_op(op_for("comfy_url_creds", task_id="again"), guard.ti("again"))
    guard.seen(error)
    assert isinstance(error, ComfyUIAuthError) and hostile.url in str(error), error


async def _forbidden(_request: web.Request) -> web.StreamResponse:
    return web.Response(status=401, text="nope")


# --- size limits: one huge WebSocket frame, one huge download ---------------------------------------

LIMIT = 1 << 20


@pytest.fixture
def limited_conn(hostile: HostileServer, auth: str, monkeypatch: pytest.MonkeyPatch) -> str:
    extra = {"max_ws_frame_bytes": LIMIT, "max_download_bytes": LIMIT}
    return connection_env(monkeypatch, hostile.url, auth, **extra)[0]


def test_a_huge_websocket_frame_is_refused_and_the_wait_goes_on_by_polling(
    hostile: HostileServer, limited_conn: str, guard: Guard
) -> None:
    async def huge_frame(request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        with contextlib.suppress(Exception):  # the client hangs up on it: that is the point
            await socket.send_bytes(b"\x00\x00\x00\x01" + b"x" * (4 * LIMIT))
            async for _message in socket:
                pass
        return socket

    hostile.routes["ws"] = huge_frame
    hostile.outputs = {"9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}}
    ti = guard.ti()

    paths, _took = run_op(make_op(limited_conn, WORKFLOW, validate=False, wait_mode="websocket"), ti)

    assert paths == ["output/a.png"], paths
    assert f"sent a message of {4 * LIMIT + 4} bytes or more (limit {LIMIT}): closed it" in guard.logs()


def test_a_huge_download_is_refused_naming_the_limit_and_leaves_nothing(
    hostile: HostileServer, limited_conn: str, guard: Guard, tmp_path: Path
) -> None:
    hostile.outputs = {"9": {"images": [{"filename": "big.png", "subfolder": "s", "type": "output"}]}}
    hostile.view_body = b"x" * (2 * LIMIT)
    ti = guard.ti()

    error, _took = run_op(op_for(limited_conn, output_dir=tmp_path / "out"), ti)

    guard.seen(error)
    assert isinstance(error, ComfyUIResponseError), error
    message = str(error)
    assert "output of node 9 (filename 'big.png', subfolder 's', type 'output')" in message
    assert (
        f"announced {2 * LIMIT} bytes, more than the connection's extra.max_download_bytes ({LIMIT})"
        in message
    )
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_a_frame_header_announcing_a_terabyte_is_refused_before_any_payload(
    hostile: HostileServer, limited_conn: str
) -> None:
    async def announce(request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        assert request.transport is not None
        request.transport.write(b"\x82\x7f" + (1 << 40).to_bytes(8, "big"))  # binary, 1 TiB, no payload
        with contextlib.suppress(Exception):
            async for _message in socket:
                pass
        return socket

    hostile.routes["ws"] = announce
    hook = ComfyUIHook(limited_conn)
    with hook.websocket("c1") as socket, pytest.raises(ComfyUIConnectionError) as info:
        socket.recv(5.0)  # without the limit: blocks reading the payload until the timeout, then None
    assert f"sent a message of {1 << 40} bytes or more (limit {LIMIT}): closed it" in str(info.value)
    assert not socket.connected
