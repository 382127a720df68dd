"""ComfyUIHook against the stand-in server: every endpoint, retries, failures, cancel, downloads."""

from __future__ import annotations

import io
import logging
import uuid

import pytest
import requests
from PIL import Image

from airflow_comfy.exceptions import (
    ComfyUIAuthError,
    ComfyUIConnectionError,
    ComfyUIError,
    ComfyUIHTTPError,
    ComfyUIResponseError,
    ComfyUIValidationError,
)
from airflow_comfy.protocol.outputs import OutputRef
from airflow_comfy.protocol.states import PromptState
from hooks.hook_helpers import empty_save, fake_http, fast_hook, gated_save, slow_save, wait_until


def _png(color: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buffer, "PNG")
    return buffer.getvalue()


def _posts(server, path: str) -> int:
    return sum(1 for method, p in server.requests if method == "POST" and p == path)


def _gets(server, path: str) -> int:
    return sum(1 for method, p in server.requests if method == "GET" and p == path)


# --- server info -------------------------------------------------------------------------------


def test_system_stats_features_and_test_connection(hook):
    stats = hook.get_system_stats()
    assert stats["system"]["comfyui_version"] and stats["devices"]
    assert hook.get_features()["max_upload_size"] > 0
    ok, message = hook.test_connection()
    assert ok and message.startswith("Connected to ComfyUI ") and hook.base_url in message


def test_object_info_all_one_and_unknown(hook, standin):
    info = hook.get_object_info()
    assert "SaveImage" in info and "StandInDelay" in info
    assert hook.get_object_info() is info  # cached per hook
    count = _gets(standin, "/object_info")
    assert hook.get_object_info(refresh=True) == info and _gets(standin, "/object_info") == count + 1
    one = hook.get_object_info("ImageBlur")
    assert list(one) == ["ImageBlur"] and "input" in one["ImageBlur"]
    assert hook.get_object_info("NoSuchNode") == {}


def test_jobs_api_is_absent_on_0_3(hook):
    assert hook.supports_jobs_api() is False


# --- submitting and reading state ----------------------------------------------------------------


def test_submit_then_history_queue_and_status(hook, standin):
    answer = hook.submit_prompt(empty_save())
    prompt_id, client_id = answer["prompt_id"], answer["client_id"]
    assert uuid.UUID(prompt_id) and client_id and answer["node_errors"] == {}
    standin.wait_idle(10)
    status = hook.get_prompt_status(prompt_id)
    assert status.state is PromptState.SUCCESS
    (ref,) = status.outputs
    assert ref.subfolder == "hooktest" and ref.filename.startswith("img_")
    history = hook.get_history(prompt_id)
    assert history[prompt_id]["prompt"][3]["client_id"] == client_id  # the client id was sent
    assert prompt_id in hook.get_history()
    assert list(hook.get_history(max_items=1)) == [prompt_id]
    assert hook.get_history(max_items=1, offset=0) == hook.get_history(max_items=1)
    assert hook.get_queue() == {"queue_running": [], "queue_pending": []}
    assert hook.get_queue_remaining() == 0
    assert hook.get_prompt_status("unknown-id").state is PromptState.NOT_FOUND
    assert standin.submissions == [prompt_id]


def test_submit_own_prompt_id_front_and_extra_data(hook, standin):
    hook.submit_prompt(gated_save("blocker"))
    standin.gates.wait_blocked("blocker")  # the next ones stay pending until released
    back = hook.submit_prompt(empty_save())
    own_id = str(uuid.uuid4())
    front = hook.submit_prompt(
        empty_save(), prompt_id=own_id, client_id="me", front=True, extra_data={"k": "v"}
    )
    assert front["prompt_id"] == own_id and front["client_id"] == "me"
    assert front["number"] < back["number"]
    assert hook.get_prompt_status(own_id).queue_position == 0
    assert hook.get_prompt_status(back["prompt_id"]).queue_position == 1
    pending = {item[1]: item for item in hook.get_queue()["queue_pending"]}
    assert pending[own_id][3] == {"k": "v", "client_id": "me"}
    standin.gates.release("blocker")
    standin.wait_idle(10)


def test_validation_error_lists_every_node_error(hook, standin):
    workflow = empty_save()
    workflow["1"]["inputs"]["width"] = 99999
    workflow["3"] = {
        "class_type": "ImageScale",
        "inputs": {"image": ["1", 0], "upscale_method": "foo", "width": 8, "height": 8, "crop": "disabled"},
    }
    workflow["4"] = {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}}
    with pytest.raises(ComfyUIValidationError) as info:
        hook.submit_prompt(workflow)
    message = str(info.value)
    assert message.startswith("Prompt outputs failed validation [prompt_outputs_failed_validation]")
    assert "node 1 (EmptyImage): width: Value 99999 bigger than max of 16384 — width" in message
    assert "node 3 (ImageScale): upscale_method: Value not in list — upscale_method: 'foo' not in" in message
    assert set(info.value.node_errors) == {"1", "3"}
    assert info.value.error["type"] == "prompt_outputs_failed_validation"
    assert standin.submissions == [] and _posts(standin, "/prompt") == 1  # never retried


def test_no_outputs_validation_error(hook):
    with pytest.raises(ComfyUIValidationError, match=r"Prompt has no outputs \[prompt_no_outputs\]"):
        hook.submit_prompt({"1": empty_save()["1"]})


def test_partial_node_errors_are_accepted_and_logged(hook, standin, caplog, capsys):
    workflow = empty_save()
    workflow["3"] = {"class_type": "SaveImage", "inputs": {"images": ["42", 0], "filename_prefix": "x"}}
    with caplog.at_level(logging.WARNING):
        answer = hook.submit_prompt(workflow)
    assert "3" in answer["node_errors"]
    captured = capsys.readouterr()
    logged = caplog.text + captured.out + captured.err  # the hook logs through Airflow's structlog
    assert "skipped invalid outputs" in logged and "node 3 (SaveImage)" in logged
    standin.wait_idle(10)
    assert hook.get_prompt_status(answer["prompt_id"]).state is PromptState.SUCCESS


# --- retries -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [502, 503, 429])
def test_submit_retries_transient_statuses_and_submits_once(hook, standin, status):
    standin.faults.fail_next(2, status=status, path="/prompt")
    answer = hook.submit_prompt(empty_save())
    assert standin.submissions == [answer["prompt_id"]]
    assert _posts(standin, "/prompt") == 3


def test_submit_retries_a_500_once_only(hook, standin):
    standin.faults.fail_next(1, status=500, path="/prompt")
    answer = hook.submit_prompt(empty_save())
    assert standin.submissions == [answer["prompt_id"]] and _posts(standin, "/prompt") == 2

    standin.faults.fail_next(3, status=500, path="/prompt")
    with pytest.raises(ComfyUIHTTPError) as info:
        hook.submit_prompt(empty_save())
    assert info.value.status_code == 500 and _posts(standin, "/prompt") == 4  # 2 more attempts, not 4
    assert "answered HTTP 500" in str(info.value)
    standin.faults.reset()


def test_get_retries_until_the_bound(hook, standin):
    standin.faults.fail_next(3, status=503, path="/queue")
    assert hook.get_queue() == {"queue_running": [], "queue_pending": []}
    assert _gets(standin, "/queue") == 4
    standin.faults.fail_next(10, status=503, path="/queue")
    with pytest.raises(ComfyUIHTTPError, match="HTTP 503"):
        hook.get_queue()
    assert _gets(standin, "/queue") == 8  # 1 + max_retries (3)
    standin.faults.reset()


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, ComfyUIHTTPError), (401, ComfyUIAuthError), (403, ComfyUIAuthError), (404, ComfyUIHTTPError)],
)
def test_no_retry_on_client_errors(hook, standin, status, error):
    standin.faults.fail_next(5, status=status, path="/queue")
    with pytest.raises(error) as info:
        hook.get_queue()
    assert info.value.status_code == status
    assert _gets(standin, "/queue") == 1
    standin.faults.reset()


@pytest.mark.parametrize("status", [401, 403, 404])
def test_no_retry_of_submit_on_client_errors(hook, standin, status):
    standin.faults.fail_next(5, status=status, path="/prompt")
    with pytest.raises(ComfyUIHTTPError) as info:
        hook.submit_prompt(empty_save())
    assert info.value.status_code == status
    assert _posts(standin, "/prompt") == 1 and standin.submissions == []
    standin.faults.reset()


def test_retry_after_a_refused_connection(hook, standin):
    standin.faults.refuse_connections(True)
    try:
        with pytest.raises(ComfyUIConnectionError):
            fast_hook(standin.url, max_retries=0).get_queue()
    finally:
        standin.faults.refuse_connections(False)
    assert hook.get_queue()["queue_pending"] == []


# --- clear failures ------------------------------------------------------------------------------


def test_connection_refused_is_one_clear_line(free_port_url):
    hook = fast_hook(free_port_url, max_retries=1)
    with pytest.raises(ComfyUIConnectionError) as info:
        hook.submit_prompt(empty_save())
    message = str(info.value)
    assert "\n" not in message
    assert f"POST {free_port_url}/prompt" in message
    assert "connection refused: is ComfyUI running, and are host and port right?" in message
    assert info.value.url == f"{free_port_url}/prompt"
    ok, text = hook.test_connection()
    assert not ok and free_port_url in text


def test_wrong_host_is_one_clear_line():
    hook = fast_hook("http://no-such-host.invalid:8188", max_retries=0)
    with pytest.raises(ComfyUIConnectionError) as info:
        hook.get_system_stats()
    message = str(info.value)
    assert "\n" not in message and "http://no-such-host.invalid:8188/system_stats" in message
    assert "the host name does not resolve: check the connection's host" in message


def test_non_json_200_answer():
    with fake_http(200, b"<html><body>Welcome to nginx</body></html>") as (url, seen):
        hook = fast_hook(url)
        with pytest.raises(ComfyUIResponseError) as info:
            hook.get_queue()
        with pytest.raises(ComfyUIResponseError, match="where JSON was expected"):
            hook.submit_prompt(empty_save())
    message = str(info.value)
    assert "\n" not in message and f"GET {url}/queue" in message
    assert "an HTML page" in message and "not a login page" in message
    assert len(seen) == 2  # no retries for a 200 that is not JSON


def test_json_of_the_wrong_shape():
    with fake_http(200, b"[1, 2, 3]", "application/json") as (url, _seen):
        with pytest.raises(ComfyUIResponseError, match="list where a JSON object was expected"):
            fast_hook(url).get_queue()
        with pytest.raises(ComfyUIResponseError, match="without a prompt_id"):
            fast_hook(url).submit_prompt(empty_save())


def test_401_from_a_proxy():
    with fake_http(401, b"<html><h1>401 Authorization Required</h1>\n</html>") as (url, seen):
        hook = fast_hook(url, headers={"Authorization": "Bearer wrong-token-123"})
        with pytest.raises(ComfyUIAuthError) as info:
            hook.submit_prompt(empty_save())
    message = str(info.value)
    assert "\n" not in message and f"POST {url}/prompt answered HTTP 401" in message
    assert "check login/password/token of the connection (or the proxy in front of ComfyUI)" in message
    assert "wrong-token-123" not in message
    assert len(seen) == 1 and seen[0]["headers"]["Authorization"] == "Bearer wrong-token-123"


def test_400_html_from_a_proxy_is_not_a_validation_error():
    with fake_http(400, b"<html>Bad Request</html>") as (url, seen), pytest.raises(ComfyUIHTTPError) as info:
        fast_hook(url).submit_prompt(empty_save())
    assert not isinstance(info.value, ComfyUIValidationError) and info.value.status_code == 400
    assert len(seen) == 1


def test_path_prefix_is_used_for_every_call(standin):
    hook = fast_hook(standin.url + "/api")
    answer = hook.submit_prompt(empty_save())
    standin.wait_idle(10)
    assert hook.get_prompt_status(answer["prompt_id"]).state is PromptState.SUCCESS
    hook.get_queue()
    hook.get_object_info("SaveImage")
    assert ("POST", "/api/prompt") in standin.requests and ("GET", "/api/queue") in standin.requests
    assert all(path.startswith("/api/") for _method, path in standin.requests)


# --- changing state ------------------------------------------------------------------------------


def test_cancel_pending_prompt_leaves_the_others(hook, standin):
    running = hook.submit_prompt(gated_save("running"))
    standin.gates.wait_blocked("running")
    victim = hook.submit_prompt(empty_save())
    other = hook.submit_prompt(empty_save())
    assert hook.cancel_prompt(victim["prompt_id"]) == "removed from the queue"
    assert hook.get_prompt_status(victim["prompt_id"]).state is PromptState.NOT_FOUND
    assert hook.get_prompt_status(running["prompt_id"]).state is PromptState.RUNNING
    standin.gates.release("running")
    standin.wait_idle(10)
    assert hook.get_prompt_status(running["prompt_id"]).state is PromptState.SUCCESS
    assert hook.get_prompt_status(other["prompt_id"]).state is PromptState.SUCCESS
    assert hook.get_prompt_status(victim["prompt_id"]).state is PromptState.NOT_FOUND


def test_cancel_running_prompt_leaves_the_others(hook, standin):
    victim = hook.submit_prompt(slow_save(2.0, steps=40))
    wait_until(lambda: hook.get_prompt_status(victim["prompt_id"]).state is PromptState.RUNNING)
    pending = hook.submit_prompt(empty_save())
    assert hook.cancel_prompt(victim["prompt_id"]) == "interrupted"
    standin.wait_idle(10)
    assert hook.get_prompt_status(victim["prompt_id"]).state is PromptState.INTERRUPTED
    assert hook.get_prompt_status(pending["prompt_id"]).state is PromptState.SUCCESS
    assert ("POST", "/interrupt") in standin.requests
    assert hook.cancel_prompt(victim["prompt_id"]) == "nothing to do (it is interrupted)"


def test_interrupt_by_id_of_a_pending_prompt_does_nothing(hook, standin):
    running = hook.submit_prompt(gated_save("running"))
    standin.gates.wait_blocked("running")  # an acted-on interrupt would stop it at its next node
    pending = hook.submit_prompt(empty_save())
    hook.interrupt(pending["prompt_id"])
    standin.gates.release("running")
    standin.wait_idle(10)
    assert hook.get_prompt_status(running["prompt_id"]).state is PromptState.SUCCESS
    assert hook.get_prompt_status(pending["prompt_id"]).state is PromptState.SUCCESS


def test_queue_and_history_management(hook, standin):
    running = hook.submit_prompt(gated_save("running"))
    standin.gates.wait_blocked("running")
    a = hook.submit_prompt(empty_save())
    b = hook.submit_prompt(empty_save())
    hook.delete_from_queue([a["prompt_id"]])
    assert [i[1] for i in hook.get_queue()["queue_pending"]] == [b["prompt_id"]]
    hook.clear_queue()
    assert hook.get_queue()["queue_pending"] == []
    assert hook.get_queue()["queue_running"][0][1] == running["prompt_id"]
    standin.gates.release("running")
    standin.wait_idle(10)
    done = hook.submit_prompt(empty_save())
    standin.wait_idle(10)
    hook.delete_history([running["prompt_id"]])
    assert hook.get_history(running["prompt_id"]) == {} and done["prompt_id"] in hook.get_history()
    hook.free(unload_models=True, free_memory=True)
    hook.clear_history()
    assert hook.get_history() == {}


def test_global_interrupt(hook, standin):
    running = hook.submit_prompt(slow_save(2.0, steps=40))
    wait_until(lambda: hook.get_prompt_status(running["prompt_id"]).state is PromptState.RUNNING)
    hook.interrupt()
    standin.wait_idle(10)
    assert hook.get_prompt_status(running["prompt_id"]).state is PromptState.INTERRUPTED


# --- files ---------------------------------------------------------------------------------------


def test_upload_view_and_download(hook, standin, tmp_path):
    first = hook.upload_image(_png(), filename="hook_upload.png", subfolder="hooktest")
    assert first == {"name": "hook_upload.png", "subfolder": "hooktest", "type": "input"}
    assert (
        hook.upload_image(_png(), filename="hook_upload.png", subfolder="hooktest")["name"]
        == "hook_upload.png"
    )
    path = tmp_path / "other.png"
    path.write_bytes(_png((0, 255, 0)))
    renamed = hook.upload_image(path, filename="hook_upload.png", subfolder="hooktest")
    assert renamed["name"] == "hook_upload (1).png"
    assert hook.upload_image(io.BytesIO(_png((0, 0, 255))), filename="fromio.png")["name"] == "fromio.png"
    with pytest.raises(ComfyUIError, match="no such file"):
        hook.upload_image(tmp_path / "missing.png")

    with hook.view("hook_upload.png", "hooktest", "input") as response:
        assert response.headers["Content-Type"] == "image/png"
        assert b"".join(response.iter_content(1024)) == _png()
    with hook.view("hook_upload.png", "hooktest", "input", preview="webp;50") as response:
        assert response.headers["Content-Type"] == "image/webp"

    answer = hook.submit_prompt(empty_save(batch=2))
    standin.wait_idle(10)
    refs = hook.get_prompt_status(answer["prompt_id"]).outputs
    assert len(refs) == 2
    target = hook.download(refs[0], tmp_path / "dl")
    assert target == (tmp_path / "dl" / "hooktest" / refs[0].filename).resolve()
    with Image.open(target) as img:
        assert img.size == (16, 16)
    flat = hook.download(refs[1], tmp_path / "dl", keep_subfolder=False)
    assert flat.parent == (tmp_path / "dl").resolve()
    assert not list((tmp_path / "dl").rglob("*.part"))
    url = hook.view_url(refs[0])
    assert url.startswith(standin.url + "/view?") and "subfolder=hooktest" in url


def test_view_missing_and_forbidden(hook, standin, tmp_path):
    with pytest.raises(ComfyUIHTTPError) as info, hook.view("nope.png"):
        pass
    assert info.value.status_code == 404 and _gets(standin, "/view") == 1
    with pytest.raises(ComfyUIHTTPError) as info:
        hook.download(OutputRef("1", "images", "x.png", subfolder="../../etc"), tmp_path / "dl")
    assert info.value.status_code == 403
    assert not isinstance(info.value, ComfyUIAuthError)  # the path is refused, not the credentials
    message = str(info.value)
    assert "output of node 1 (filename 'x.png', subfolder '../../etc', type 'output')" in message
    assert "outside the server's folders" in message and "check the credentials" not in message
    with pytest.raises(ComfyUIHTTPError, match=r"node 7 \(filename 'gone.png'.*no such file on the server"):
        hook.download(OutputRef("7", "images", "gone.png"), tmp_path / "dl")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_a_401_on_view_still_blames_the_credentials_and_names_the_file(tmp_path):
    with fake_http(401, b"", "text/plain") as (url, _seen), pytest.raises(ComfyUIAuthError) as info:
        fast_hook(url).download(OutputRef("9", "images", "a.png", subfolder="s"), tmp_path)
    assert "output of node 9 (filename 'a.png', subfolder 's', type 'output')" in str(info.value)
    assert "check login/password/token" in str(info.value)


@pytest.mark.parametrize(
    ("subfolder", "filename"),
    [("../../..", "evil.png"), ("", "../../evil.png"), ("/tmp", "/tmp/evil.png"), ("..\\..", "..\\evil.png")],
)
def test_download_never_writes_outside_its_folder(tmp_path, subfolder, filename):
    # A hostile (or buggy) server answers any name: the file still lands inside dest.
    dest = tmp_path / "a" / "b" / "dest"
    with fake_http(200, b"IMAGEBYTES", "image/png") as (url, seen):
        target = fast_hook(url).download(OutputRef("9", "images", filename, subfolder=subfolder), dest)
    assert dest.resolve() in target.parents and target.read_bytes() == b"IMAGEBYTES"
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [target]
    assert "filename=" in seen[0]["path"]


def test_download_refuses_a_symlink_out(tmp_path, standin, hook):
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "hooktest").symlink_to(outside)
    answer = hook.submit_prompt(empty_save())
    standin.wait_idle(10)
    (ref,) = hook.get_prompt_status(answer["prompt_id"]).outputs
    with pytest.raises(ValueError, match="outside"):
        hook.download(ref, dest)
    assert list(outside.iterdir()) == []


def test_download_cleans_up_a_broken_transfer(tmp_path, monkeypatch):
    with fake_http(200, b"x" * 10, "image/png") as (url, _seen):
        hook = fast_hook(url)

        def broken(self, chunk_size=1, decode_unicode=False):
            yield b"partial"
            raise requests.exceptions.ChunkedEncodingError("connection broken")

        monkeypatch.setattr(requests.Response, "iter_content", broken)
        with pytest.raises(ComfyUIConnectionError, match="Cannot reach ComfyUI for GET"):
            hook.download(OutputRef("1", "images", "a.png"), tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


# --- websocket -----------------------------------------------------------------------------------


def test_websocket_receives_the_prompt_events(hook, standin):
    client_id = "ws-hook-test"
    with hook.websocket(client_id) as ws:
        assert ws.connected
        first = ws.recv(5)
        assert first.type == "status" and first.data["sid"] == client_id
        answer = hook.submit_prompt(empty_save(), client_id=client_id)
        types = []
        for event in ws.events(idle_timeout=5):
            if getattr(event, "type", None):
                types.append(event.type)
            if event.type == "executing" and event.data.get("node") is None:
                break
        assert answer["prompt_id"]
        assert types.index("execution_start") < types.index("execution_success") < len(types) - 1
    assert not ws.connected
    with pytest.raises(ComfyUIConnectionError, match="is not open"):
        ws.recv(0.1)


def test_websocket_recv_timeout_and_drop(hook, standin):
    ws = hook.websocket("ws-drop").connect()
    try:
        assert ws.recv(5).type == "status"
        assert ws.recv(0.1) is None
        standin.faults.drop_websockets()
        with pytest.raises(ComfyUIConnectionError, match=r"ws://127\.0\.0\.1:\d+/ws\?clientId=ws-drop"):
            for _ in range(50):
                ws.recv(0.2)
    finally:
        ws.close()


def test_websocket_to_nothing_is_a_connection_error(free_port_url):
    with pytest.raises(ComfyUIConnectionError, match="Cannot open the ComfyUI WebSocket"):
        fast_hook(free_port_url).websocket("x").connect()


def test_websocket_refused_by_a_proxy():
    with fake_http(401, b"no") as (url, _seen), pytest.raises(ComfyUIConnectionError, match="HTTP 401"):
        fast_hook(url).websocket("x").connect()
