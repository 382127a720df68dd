"""The airflow-comfy command line: convert and validate, against files and a local HTTP server."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def object_info_url() -> Iterator[str]:
    """A tiny HTTP server answering GET /object_info with the recorded body."""
    body = json.dumps(json.loads(OBJECT_INFO.read_text())["response"]["body"]).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, payload = (200, body) if self.path == "/object_info" else (404, b"{}")
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
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


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


def test_convert_ui_without_object_info_fails_clearly(capsys):
    assert main(["convert", str(DATA / "ui" / "default.json")]) == 1
    assert "needs the server's object_info" in capsys.readouterr().err


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


def test_validate_unreachable_server(tmp_path, capsys):
    path = DATA / "api" / "default.json"
    assert main(["validate", str(path), "--url", "http://127.0.0.1:9"]) == 2
    assert "cannot reach http://127.0.0.1:9/object_info" in capsys.readouterr().err


def test_cli_does_not_import_airflow():
    code = (
        "import sys, airflow_comfy.cli\n"
        "sys.exit(1 if any(m == 'airflow' or m.startswith('airflow.') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
