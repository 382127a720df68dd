"""The airflow-comfy command line: convert and validate, against files and a local HTTP server."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from contract_data import CONTRACT_DIR

from airflow_comfy.cli import main

DATA = Path(__file__).parent / "workflows" / "data"
OBJECT_INFO = CONTRACT_DIR / "object_info.json"


class Recorder:
    """What the fake server saw, and how many next GETs it answers 503."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        self.fail_next = 0


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[str, Recorder]]:
    """A tiny HTTP server answering GET /object_info with the recorded body, recording each request."""
    body = json.dumps(json.loads(OBJECT_INFO.read_text())["response"]["body"]).encode()
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            recorder.requests.append((self.path, self.headers.get("Authorization")))
            status, payload = (200, body) if self.path == "/object_info" else (404, b"{}")
            if recorder.fail_next:
                recorder.fail_next -= 1
                status, payload = 503, b"{}"
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", recorder
    server.shutdown()
    server.server_close()


@pytest.fixture
def object_info_url(fake_server) -> str:
    url, recorder = fake_server
    recorder.requests.clear()
    recorder.fail_next = 0
    return url


@pytest.fixture
def recorder(fake_server, object_info_url) -> Recorder:
    return fake_server[1]


def test_convert_to_stdout(capsys):
    assert main(["convert", str(DATA / "ui" / "default.json"), "--object-info", str(OBJECT_INFO)]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((DATA / "api" / "default.json").read_text())


def test_convert_to_file_with_url_and_override(tmp_path, object_info_url):
    out = tmp_path / "api.json"
    argv = ["convert", str(DATA / "ui" / "01_get_started_text_to_image.json"), "--url", object_info_url]
    assert (
        main([*argv, "-o", str(out), "--override", "83:3.seed=11", "--override", "60.filename_prefix=x y"])
        == 0
    )
    api = json.loads(out.read_text())
    assert api["83:3"]["inputs"]["seed"] == 11 and api["60"]["inputs"]["filename_prefix"] == "x y"


def test_convert_ui_without_object_info_names_the_options_that_provide_it(capsys):
    assert main(["convert", str(DATA / "ui" / "default.json")]) == 2
    err = capsys.readouterr().err
    assert "web UI save" in err and "--url" in err and "--conn-id" in err and "--object-info" in err


def test_convert_not_json(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    assert main(["convert", str(bad), "--object-info", str(OBJECT_INFO)]) == 1
    assert "bad.json is not valid JSON" in capsys.readouterr().err


def test_validate_reports_server_style_errors(object_info_url, capsys):
    assert main(["validate", str(DATA / "ui" / "default.json"), "--url", object_info_url]) == 1
    out = capsys.readouterr().out
    assert "node 4 (CheckpointLoaderSimple): ckpt_name: Value not in list" in out


def test_validate_ok(object_info_url, tmp_path, capsys):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
    }
    path = tmp_path / "api.json"
    path.write_text(json.dumps(prompt))
    assert main(["validate", str(path), "--url", object_info_url]) == 0
    assert capsys.readouterr().out.startswith("OK: 2 nodes, outputs 2")


def test_validate_unreachable_server_gives_the_clients_message(tmp_path, capsys):
    path = DATA / "api" / "default.json"
    assert main(["validate", str(path), "--url", "http://127.0.0.1:9", "--max-retries", "0"]) == 2
    err = capsys.readouterr().err
    assert "Cannot reach ComfyUI for GET http://127.0.0.1:9/object_info: connection refused" in err
    assert "HTTPConnectionPool" not in err and "Max retries" not in err


def _api_file(tmp_path) -> Path:
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
    }
    path = tmp_path / "api.json"
    path.write_text(json.dumps(prompt))
    return path


def test_validate_reads_a_url_like_a_connection_host(tmp_path, object_info_url, recorder, capsys):
    """No scheme, credentials in the URL (Basic auth, as a connection's login/password), retried 503."""
    host_port = object_info_url.removeprefix("http://")
    recorder.fail_next = 1
    argv = ["validate", str(_api_file(tmp_path)), "--url", f"ann:s%3Acret@{host_port}"]
    assert main(argv) == 0, capsys.readouterr().err
    basic = "Basic " + base64.b64encode(b"ann:s:cret").decode()
    assert recorder.requests == [("/object_info", basic), ("/object_info", basic)]
    out, err = capsys.readouterr()
    assert out.startswith("OK: 2 nodes") and "cret" not in out + err


def test_validate_with_an_airflow_connection(tmp_path, object_info_url, recorder, monkeypatch, capsys):
    host, port = object_info_url.removeprefix("http://").split(":")
    conn = {"conn_type": "comfyui", "host": host, "port": int(port), "extra": {"token": "tok-123"}}
    monkeypatch.setenv("AIRFLOW_CONN_CLI_COMFY", json.dumps(conn))
    assert main(["validate", str(_api_file(tmp_path)), "--conn-id", "cli_comfy"]) == 0
    assert recorder.requests == [("/object_info", "Bearer tok-123")]
    # (the first Airflow import of a process may log a line of its own before it)
    assert capsys.readouterr().out.splitlines()[-1].startswith("OK: 2 nodes")


def test_a_bad_connection_field_is_a_usage_error(tmp_path, monkeypatch, capsys):
    conn = {"conn_type": "comfyui", "host": "127.0.0.1", "extra": {"read_timeout": "soon"}}
    monkeypatch.setenv("AIRFLOW_CONN_CLI_BAD", json.dumps(conn))
    assert main(["validate", str(_api_file(tmp_path)), "--conn-id", "cli_bad"]) == 2
    assert "Connection 'cli_bad': extra.read_timeout must be a number of seconds" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["convert", "validate"])
def test_missing_files_exit_2_before_any_request(tmp_path, object_info_url, recorder, command, capsys):
    api = _api_file(tmp_path)
    cases = [
        ([str(tmp_path / "nosuch.json"), "--url", object_info_url], "workflow file", "does not exist"),
        ([str(tmp_path), "--url", object_info_url], "workflow file", "is a directory"),
        ([str(api), "--object-info", str(tmp_path / "nosuch.json")], "--object-info file", "does not exist"),
    ]
    for args, what, problem in cases:
        assert main([command, *args]) == 2, args
        err = capsys.readouterr().err
        assert what in err and problem in err, err
    assert recorder.requests == []


def test_validate_offline_with_a_saved_object_info(tmp_path, capsys):
    assert main(["validate", str(_api_file(tmp_path)), "--object-info", str(OBJECT_INFO)]) == 0
    assert capsys.readouterr().out.startswith("OK: 2 nodes")


def test_validate_needs_a_source_of_node_definitions(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["validate", str(_api_file(tmp_path))])
    assert info.value.code == 2
    assert "--url" in capsys.readouterr().err


def test_cli_does_not_import_airflow():
    code = (
        "import sys, airflow_comfy.cli\n"
        "sys.exit(1 if any(m == 'airflow' or m.startswith('airflow.') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
