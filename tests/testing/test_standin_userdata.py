"""The stand-in's user data routes replay the real ComfyUI 0.3.64 transcripts (tests/data/comfyui-0.3.64).

The transcripts were recorded in one session on a fresh server, in the order of the table of their
README (``USERDATA.md``): they are replayed in that order on one fresh stand-in, and every answer
must match the recorded one (status, Content-Type, reason phrase, body). File listings are compared
without their order (the real server answers in file-system order); ``modified``/``created`` times,
ETags and the ids of POST /users are volatile and not compared (POST /users is not replayed: it has
no effect on a single-user server).
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from airflow_comfy.testing import StandInServer

DATA = Path(__file__).resolve().parents[1] / "data" / "comfyui-0.3.64"
ORDER = re.findall(r"^\| (userdata_\w+) \|", (DATA / "USERDATA.md").read_text(), re.M)
VOLATILE = {"modified", "created"}


# Transcripts whose answers do not depend on what the server holds: replayed on the live server too.
STATELESS = [
    "userdata_list_no_dir",
    "userdata_list_dir_traversal",
    "userdata_get_missing",
    "userdata_get_unencoded_slash",
    "userdata_get_traversal",
    "userdata_get_traversal_encoded_dots",
    "userdata_get_absolute",
    "userdata_save_unencoded_slash",
    "userdata_save_traversal",
    "userdata_delete_missing",
    "userdata_delete_traversal",
    "userdata_delete_unencoded_slash",
    "userdata_move_missing_source",
    "userdata_move_traversal_source",
    "userdata_v2_list_missing",
    "userdata_v2_list_traversal",
]


def _steps(name: str) -> list[dict[str, Any]]:
    transcript = json.loads((DATA / f"{name}.json").read_text())
    return transcript.get("steps") or [transcript]


def _send(
    url: str, request: dict[str, Any], headers: dict[str, str]
) -> tuple[int, str, dict[str, str], bytes]:
    parts = urllib.parse.urlsplit(url)
    target = request["path"]
    if request.get("query"):
        target += "?" + urllib.parse.urlencode(request["query"], safe="/")
    body = request.get("raw_body")
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(
            request["method"], target, body=body.encode() if body is not None else None, headers=headers
        )
        response = connection.getresponse()
        return response.status, response.reason, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _normal(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: _normal(v) for k, v in body.items() if k not in VOLATILE}
    if isinstance(body, list):
        items = [_normal(v) for v in body]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    return body


def _etag(url: str, path: str) -> str:
    _, _, headers, _ = _send(url, {"method": "GET", "path": path}, {})
    return headers["Etag"]


def test_every_recorded_transcript_is_listed():
    assert sorted(ORDER) == sorted(p.stem for p in DATA.glob("userdata_*.json"))


def _check(url: str, name: str, index: int, step: dict[str, Any]) -> None:
    request, expected = step["request"], step["response"]
    headers = dict(request.get("headers") or {})
    if "If-None-Match" in headers:
        headers["If-None-Match"] = _etag(url, request["path"])
    status, reason, got_headers, raw = _send(url, request, headers)
    where = f"{name} step {index}: {request['method']} {request['path']}"
    assert status == expected["status"], f"{where}: {status} {raw[:200]!r}"
    want_type = expected.get("headers", {}).get("Content-Type")
    assert got_headers.get("Content-Type") == want_type, where
    if "reason" in expected:
        assert reason == expected["reason"], where
    want = expected.get("body", "")
    if not isinstance(want, str):
        assert _normal(json.loads(raw)) == _normal(want), where
    elif want_type and "json" in want_type and raw and status != 206:
        assert json.loads(raw) == want, where  # a JSON string answer
    else:
        assert raw.decode() == want, where


def test_standin_answers_like_the_real_server(tmp_path: Path) -> None:
    replayed = 0
    with StandInServer(base_dir=tmp_path / "comfyui") as server:
        for name in ORDER:
            for index, step in enumerate(_steps(name)):
                if step["request"]["method"] == "POST" and step["request"]["path"] == "/users":
                    continue
                _check(server.url, name, index, step)
                replayed += 1
    assert replayed > 90


@pytest.fixture(params=["standin", pytest.param("live", marks=pytest.mark.live)])
def server_url(request: pytest.FixtureRequest) -> str:
    if request.param == "live":
        return request.getfixturevalue("live_url")
    return request.getfixturevalue("standin").url


@pytest.mark.parametrize("name", STATELESS)
def test_answers_that_do_not_depend_on_state(server_url: str, name: str) -> None:
    for index, step in enumerate(_steps(name)):
        _check(server_url, name, index, step)


@pytest.mark.parametrize("flag", ["full_info=true", "recurse=true&full_info=true"])
def test_full_info_times_are_seconds_like_the_real_server(standin, flag):
    import requests

    requests.post(f"{standin.url}/userdata/workflows%2Fa.json", data=b"{}", timeout=10).raise_for_status()
    [entry] = requests.get(f"{standin.url}/userdata?dir=workflows&{flag}", timeout=10).json()
    recorded = json.loads((DATA / "userdata_list_full_info.json").read_text())["response"]["body"][0]
    assert set(entry) == set(recorded) and isinstance(entry["modified"], float)
    assert abs(len(str(int(entry["modified"]))) - len(str(int(recorded["modified"])))) <= 1
