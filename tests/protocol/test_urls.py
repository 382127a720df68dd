"""Base URLs, endpoint paths, WebSocket and /view URLs, and redaction."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_comfy.protocol import urls


@pytest.mark.parametrize(
    ("host", "kwargs", "expected"),
    [
        ("127.0.0.1", {}, "http://127.0.0.1:8188"),
        ("comfy.local", {"port": 9000}, "http://comfy.local:9000"),
        ("gpu-1", {"schema": "https"}, "https://gpu-1"),
        ("gpu-1", {"schema": "HTTPS", "port": 8443}, "https://gpu-1:8443"),
        ("gpu-1", {"use_ssl": True}, "https://gpu-1"),
        ("gpu-1", {"use_ssl": False}, "http://gpu-1:8188"),
        ("https://gpu-1.example.com/comfy", {}, "https://gpu-1.example.com/comfy"),
        ("https://gpu-1.example.com/comfy/", {}, "https://gpu-1.example.com/comfy"),
        ("http://gpu-1:8000", {}, "http://gpu-1:8000"),
        ("http://gpu-1:8000", {"port": 9001}, "http://gpu-1:9001"),
        ("http://gpu-1:8000", {"use_ssl": True}, "https://gpu-1:8000"),
        ("gpu-1", {"path_prefix": "/comfy/"}, "http://gpu-1:8188/comfy"),
        ("gpu-1", {"path_prefix": "api"}, "http://gpu-1:8188/api"),
        ("https://h/proxy", {"path_prefix": "/comfy"}, "https://h/proxy/comfy"),
        ("ws://gpu-1:8188", {}, "http://gpu-1:8188"),
        ("wss://gpu-1", {}, "https://gpu-1"),
        ("[::1]", {}, "http://[::1]:8188"),
        ("http://[::1]:9000", {}, "http://[::1]:9000"),
        ("  gpu-1  ", {}, "http://gpu-1:8188"),
    ],
)
def test_build_base_url(host, kwargs, expected):
    assert urls.build_base_url(host, **kwargs) == expected


def test_build_base_url_drops_credentials_in_host():
    url = urls.build_base_url("https://alice:s3cret@gpu-1:9443/comfy")
    assert url == "https://gpu-1:9443/comfy"
    assert "s3cret" not in url and "alice" not in url


@pytest.mark.parametrize(
    ("host", "kwargs", "match"),
    [
        ("", {}, "no host"),
        ("   ", {}, "no host"),
        ("ftp://gpu-1", {}, "Unsupported scheme 'ftp'"),
        ("gpu-1", {"schema": "gopher"}, "Unsupported scheme"),
        ("http://", {}, "Cannot read a host name"),
        ("gpu-1", {"port": 70000}, "out of range"),
        ("http://gpu-1:notaport", {}, "Cannot read a port"),
    ],
)
def test_build_base_url_rejects_bad_input(host, kwargs, match):
    with pytest.raises(ValueError, match=match):
        urls.build_base_url(host, **kwargs)


def test_build_base_url_error_hides_credentials():
    with pytest.raises(ValueError) as info:
        urls.build_base_url("http://alice:s3cret@:notaport")
    assert "s3cret" not in str(info.value)


def test_endpoint_paths():
    assert urls.endpoint("http://h:1/", urls.PROMPT) == "http://h:1/prompt"
    assert urls.endpoint("http://h:1/comfy", urls.QUEUE) == "http://h:1/comfy/queue"
    assert urls.history_path() == "/history"
    assert urls.history_path("abc") == "/history/abc"
    assert urls.history_path("a/b?c") == "/history/a%2Fb%3Fc"
    assert urls.object_info_path() == "/object_info"
    assert urls.object_info_path("ImageBlur") == "/object_info/ImageBlur"
    assert urls.object_info_path("My Node/x") == "/object_info/My%20Node%2Fx"
    assert urls.job_path() == "/api/jobs"
    assert urls.job_path("p-1") == "/api/jobs/p-1"
    assert urls.job_path("p 1", "cancel") == "/api/jobs/p%201/cancel"


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://h:8188", "ws://h:8188/ws?clientId=abc"),
        ("https://h", "wss://h/ws?clientId=abc"),
        ("https://h/comfy/", "wss://h/comfy/ws?clientId=abc"),
        ("http://h:8188/api", "ws://h:8188/api/ws?clientId=abc"),
    ],
)
def test_ws_url(base, expected):
    assert urls.ws_url(base, "abc") == expected


def test_ws_url_encodes_client_id():
    url = urls.ws_url("http://h:1", "a b&c=d")
    assert parse_qs(urlsplit(url).query) == {"clientId": ["a b&c=d"]}


def test_view_params_and_url():
    assert urls.view_params("a.png") == {"filename": "a.png", "subfolder": "", "type": "output"}
    assert urls.view_params("a.png", "sub", "temp") == {
        "filename": "a.png",
        "subfolder": "sub",
        "type": "temp",
    }
    url = urls.view_url("http://h:1/comfy", "x y&.png", "s/t", "temp")
    parts = urlsplit(url)
    assert parts.path == "/comfy/view"
    assert parse_qs(parts.query, keep_blank_values=True) == {
        "filename": ["x y&.png"],
        "subfolder": ["s/t"],
        "type": ["temp"],
    }


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://alice:pw@h:1/p", "http://h:1/p"),
        ("https://tok@h/x?token=abc&a=1", "https://h/x?token=***&a=1"),
        ("http://h/x?API_KEY=zz&Password=p&key=k", "http://h/x?API_KEY=***&Password=***&key=***"),
        ("http://h/x?filename=a.png&type=output", "http://h/x?filename=a.png&type=output"),
        ("http://h/x?flag", "http://h/x?flag"),
    ],
)
def test_redact_url(url, expected):
    assert urls.redact_url(url) == expected


def test_redact_url_unparseable():
    assert urls.redact_url("http://[::1") == "<unparseable URL>"


def test_query_string_drops_none():
    assert urls.query_string({"a": 1, "b": None, "c": "x y"}) == "a=1&c=x+y"


def test_server_label_is_a_safe_folder_name():
    assert urls.server_label("http://gpu-1:8188/comfy") == "gpu-1_8188_comfy"
    assert urls.server_label("https://[::1]:9000") == "__1_9000"
    assert urls.server_label("http://..") == "server"
