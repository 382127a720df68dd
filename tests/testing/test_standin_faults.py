"""Fault switches, records, the command line and load on the stand-in server."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
import websocket
from standin_helpers import submit

from airflow_comfy.testing import StandInServer


def test_refuse_connections_keeps_the_port(standin) -> None:
    port = standin.port
    standin.faults.refuse_connections(True)
    with pytest.raises(requests.ConnectionError):
        requests.get(standin.url + "/prompt", timeout=5)
    standin.faults.refuse_connections(False)
    assert standin.port == port
    assert requests.get(standin.url + "/prompt", timeout=5).status_code == 200


def test_refuse_websockets_and_raw_frames(standin) -> None:
    standin.faults.refuse_websockets(403)
    for path in ("/ws", "/api/ws"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(f"ws://127.0.0.1:{standin.port}{path}?clientId=x", timeout=5)
        assert refused.value.status_code == 403
    assert requests.get(standin.url + "/queue", timeout=5).status_code == 200  # only upgrades are refused
    standin.faults.refuse_websockets(None)
    ws = websocket.create_connection(f"ws://127.0.0.1:{standin.port}/ws?clientId=x", timeout=5)
    try:
        assert ws.recv_data()[0] == websocket.ABNF.OPCODE_TEXT  # the greeting status
        standin.faults.send_raw_websocket_frame("not json")
        standin.faults.send_raw_websocket_frame(b"\xff\x00")
        assert ws.recv_data() == (websocket.ABNF.OPCODE_TEXT, b"not json")
        assert ws.recv_data() == (websocket.ABNF.OPCODE_BINARY, b"\xff\x00")
    finally:
        ws.close()


def test_fail_next_with_status_and_path(standin) -> None:
    standin.faults.fail_next(2, status=500, path="/history")
    assert requests.get(standin.url + "/prompt", timeout=5).status_code == 200
    for _ in range(2):
        response = requests.get(standin.url + "/history", timeout=5)
        assert response.status_code == 500
        assert response.text == "500 Internal Server Error\n\nServer got itself in trouble"
    assert requests.get(standin.url + "/history", timeout=5).status_code == 200
    standin.faults.fail_next(1, status=429)
    throttled = requests.get(standin.url + "/queue", timeout=5)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
    assert requests.get(standin.url + "/queue", timeout=5).status_code == 200


def test_drop_and_silence_websockets(standin, ws_factory, contract_workflows) -> None:
    ws = ws_factory("me")
    standin.faults.drop_websockets()
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        for _ in range(3):
            ws.record_one(5)
    quiet = ws_factory("quiet")
    standin.faults.silence_websockets(True)
    prompt_id = submit(standin, contract_workflows["empty_save"], client_id="quiet")["prompt_id"]
    standin.wait_idle(30)
    quiet.drain(0.3)
    assert quiet.types() == ["status"]
    assert prompt_id in requests.get(f"{standin.url}/history/{prompt_id}", timeout=5).json()
    standin.faults.silence_websockets(False)


def test_delay_responses(standin) -> None:
    standin.faults.delay_responses(0.3)
    started = time.monotonic()
    requests.get(standin.url + "/prompt", timeout=5)
    assert time.monotonic() - started >= 0.3
    standin.faults.delay_responses(0)


def test_requests_and_submissions_are_recorded(standin, contract_workflows) -> None:
    prompt_id = submit(standin, contract_workflows["empty_save"])["prompt_id"]
    requests.get(standin.url + "/api/queue", timeout=5)
    assert standin.submissions == [prompt_id]
    assert standin.requests[-2:] == [("POST", "/prompt"), ("GET", "/api/queue")]
    standin.wait_idle(30)


def test_only_loopback(tmp_path) -> None:
    with pytest.raises(ValueError):
        StandInServer(tmp_path, host="0.0.0.0")


def test_load_many_prompts_and_clients(standin, contract_workflows) -> None:
    blocker = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1}},
        "2": {"class_type": "StandInDelay", "inputs": {"image": ["1", 0], "seconds": 30.0, "steps": 300}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    submit(standin, blocker)
    with requests.Session() as session:
        for _ in range(1000):
            response = session.post(
                standin.url + "/prompt", json={"prompt": contract_workflows["empty_save"]}, timeout=10
            )
            assert response.status_code == 200
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        statuses = list(
            pool.map(lambda _: requests.get(standin.url + "/queue", timeout=20).status_code, range(64))
        )
    assert statuses == [200] * 64
    assert requests.get(standin.url + "/prompt", timeout=10).json()["exec_info"]["queue_remaining"] == 1001
    requests.post(standin.url + "/queue", json={"clear": True}, timeout=10)
    requests.post(standin.url + "/interrupt", timeout=10)
    standin.wait_idle(30)


def test_command_line(tmp_path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "airflow_comfy.testing", "--port", "0", "--base-dir", str(tmp_path)]
    process = subprocess.Popen(
        [*command, "--node-delay", "ImageBlur=0.5"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("ComfyUI stand-in listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        assert requests.get(url + "/system_stats", timeout=10).status_code == 200
        assert (tmp_path / "output").is_dir()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    bad = subprocess.run([*command, "--node-delay", "nonsense"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "CLASS=SECONDS" in bad.stderr


def test_command_line_explains_a_taken_port_and_a_bad_base_dir_in_one_line(tmp_path) -> None:
    """No traceback: one stderr line naming the option to change, exit status 2."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [sys.executable, "-m", "airflow_comfy.testing", "--port", str(port), "--base-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert busy.returncode == 2, busy.stderr
    assert busy.stderr.count("\n") == 1 and "Traceback" not in busy.stderr, busy.stderr
    assert f"--port {port}: already in use" in busy.stderr and "choose another --port" in busy.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad_dir = subprocess.run(
        [sys.executable, "-m", "airflow_comfy.testing", "--port", "0", "--base-dir", str(blocker / "sub")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_dir.returncode == 2, bad_dir.stderr
    assert bad_dir.stderr.count("\n") == 1 and "Traceback" not in bad_dir.stderr, bad_dir.stderr
    assert f"--base-dir {blocker / 'sub'}: cannot create its folders" in bad_dir.stderr


def test_stop_leaves_no_threads(tmp_path, contract_workflows) -> None:
    import threading

    before = set(threading.enumerate())
    with StandInServer(tmp_path, node_delays={"ImageBlur": 120.0}) as server:
        submit(server, contract_workflows["long_about_10s"])
        requests.get(server.url + "/object_info", timeout=10)
        server.restart()
        submit(server, contract_workflows["long_about_10s"])
        started = time.monotonic()
    # The stop does not wait for the running node (120 s): a bound far above a loaded machine's stop.
    assert time.monotonic() - started < 30
    assert set(threading.enumerate()) - before == set()
