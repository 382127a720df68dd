"""Airflow connection → ComfyUISettings: JSON and URI forms, auth, TLS, timeouts, bad values."""

from __future__ import annotations

import base64
import json

import pytest
from airflow.sdk import Connection

from airflow_comfy.hooks.comfyui import ComfyUIHook
from airflow_comfy.hooks.connection import SecretHeaders, parse_bool, settings_from_connection


def from_json(**fields) -> Connection:
    return Connection.from_json(json.dumps({"conn_type": "comfyui", **fields}), conn_id="comfy")


def from_uri(uri: str) -> Connection:
    return Connection(conn_id="comfy", uri=uri)


def test_json_defaults():
    settings = settings_from_connection(from_json(host="127.0.0.1"))
    assert settings.base_url == "http://127.0.0.1:8188"
    assert dict(settings.auth_headers) == {}
    assert settings.verify is True
    assert settings.timeout == (10.0, 60.0)
    assert (settings.max_retries, settings.retry_min_wait, settings.retry_max_wait) == (5, 0.5, 10.0)
    assert settings.conn_id == "comfy"


def test_json_full(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    conn = from_json(
        host="gpu-1.example.com",
        port=9443,
        schema="https",
        extra={
            "path_prefix": "/comfy",
            "verify": str(bundle),
            "connect_timeout": 3,
            "read_timeout": 120.5,
            "max_retries": 0,
            "retry_min_wait": 0.1,
            "retry_max_wait": 2,
        },
    )
    s = settings_from_connection(conn)
    assert s.base_url == "https://gpu-1.example.com:9443/comfy"
    assert s.verify == str(bundle)
    assert s.timeout == (3.0, 120.5)
    assert (s.max_retries, s.retry_min_wait, s.retry_max_wait) == (0, 0.1, 2.0)


def test_uri_form_with_string_extras():
    conn = from_uri(
        "comfyui://gpu-1:9000/?use_ssl=true&verify=false&path_prefix=%2Fapi&connect_timeout=2.5&max_retries=7"
    )
    s = settings_from_connection(conn)
    assert s.base_url == "https://gpu-1:9000/api"
    assert s.verify is False
    assert s.connect_timeout == 2.5 and s.max_retries == 7


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("True", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        (" false ", False),
        ("0", False),
        ("no", False),
        ("off", False),
        (True, True),
        (False, False),
    ],
)
def test_booleans_from_strings(value, expected):
    assert parse_bool(value, name="use_ssl", default=not expected) is expected


def test_verify_accepts_bools_bool_like_text_and_existing_bundles(tmp_path):
    folder = tmp_path / "certs"  # requests also takes a folder of c_rehash'ed certificates
    folder.mkdir()
    bundle = folder / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    for value, expected in [(False, False), ("off", False), ("TRUE", True), (str(bundle), str(bundle))]:
        assert settings_from_connection(from_json(host="h", extra={"verify": value})).verify == expected
    assert settings_from_connection(from_json(host="h", extra={"verify": str(folder)})).verify == str(folder)


def test_empty_strings_mean_not_set():
    # A URI like ?verify=&use_ssl= must not switch TLS verification off.
    s = settings_from_connection(from_uri("comfyui://gpu-1/?verify=&use_ssl=&connect_timeout="))
    assert s.verify is True and s.base_url == "http://gpu-1:8188" and s.connect_timeout == 10.0
    assert parse_bool("", name="x", default=True) is True


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"use_ssl": "maybe"}, "extra.use_ssl must be true or false, got 'maybe'"),
        (
            {"verify": "maybe"},
            "extra.verify must be true, false or the path of an existing CA bundle file, got 'maybe'",
        ),
        ({"verify": 3}, "extra.verify must be true, false or the path of an existing CA bundle file, got 3"),
        ({"verify": "/nonexistent/ca.pem"}, "no such file on this machine"),
        ({"connect_timeout": "soon"}, "extra.connect_timeout must be a number of seconds"),
        ({"read_timeout": -1}, "extra.read_timeout must be positive"),
        ({"max_retries": "many"}, "extra.max_retries must be a whole number"),
        ({"max_retries": -2}, "extra.max_retries must not be negative"),
        ({"headers": "{not json"}, "extra.headers must be a JSON object"),
        ({"headers": ["X-A", "b"]}, "extra.headers must be an object"),
    ],
)
def test_bad_values_give_clear_errors(extra, match):
    conn = from_json(host="h", extra=extra)
    with pytest.raises(ValueError, match=match) as info:
        settings_from_connection(conn)
    assert str(info.value).startswith("Connection 'comfy': ")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({}, "has no host"),
        ({"host": "ftp://h"}, "Unsupported scheme"),
        ({"host": "h", "schema": "smtp"}, "Unsupported scheme"),
        ({"host": "h", "port": 123456}, "out of range"),
    ],
)
def test_bad_host_fields(fields, match):
    with pytest.raises(ValueError, match=match) as info:
        settings_from_connection(from_json(**fields))
    assert "'comfy'" in str(info.value)


def test_full_url_in_host():
    s = settings_from_connection(from_json(host="https://gpu-1.example.com/comfy/"))
    assert s.base_url == "https://gpu-1.example.com/comfy"
    s = settings_from_connection(from_json(host="http://10.0.0.5:8000", extra={"path_prefix": "api"}))
    assert s.base_url == "http://10.0.0.5:8000/api"


def test_basic_auth():
    s = settings_from_connection(from_uri("comfyui://alice:p%40ss%3Aword@gpu-1:8188"))
    value = s.auth_headers["Authorization"]
    assert value == "Basic " + base64.b64encode(b"alice:p@ss:word").decode()
    assert "p@ss:word" in s.auth_headers.secret_values()


def test_bearer_from_password_alone_or_token():
    s = settings_from_connection(from_json(host="h", password="tok-123456"))
    assert dict(s.auth_headers) == {"Authorization": "Bearer tok-123456"}
    s = settings_from_connection(from_json(host="h", extra={"token": "tok-abcdef"}))
    assert dict(s.auth_headers) == {"Authorization": "Bearer tok-abcdef"}
    s = settings_from_connection(from_uri("comfyui://gpu-1/?token=tok-uri-99"))
    assert dict(s.auth_headers) == {"Authorization": "Bearer tok-uri-99"}
    assert "tok-uri-99" in s.auth_headers.secret_values()


def test_login_without_password_sends_no_auth():
    s = settings_from_connection(from_json(host="h", login="alice"))
    assert dict(s.auth_headers) == {}


def test_extra_headers_dict_and_json_text():
    s = settings_from_connection(from_json(host="h", extra={"headers": {"X-API-Key": "key-1", "X-N": 5}}))
    assert dict(s.auth_headers) == {"X-API-Key": "key-1", "X-N": "5"}
    s = settings_from_connection(from_uri("comfyui://h/?headers=%7B%22X-API-Key%22%3A%22key-2%22%7D"))
    assert dict(s.auth_headers) == {"X-API-Key": "key-2"}


def test_explicit_authorization_header_wins_case_insensitively():
    conn = from_json(
        host="h", login="a", password="secret-pw", extra={"headers": {"authorization": "Custom x"}}
    )
    s = settings_from_connection(conn)
    assert dict(s.auth_headers) == {"authorization": "Custom x"}


def test_secret_headers_repr_hides_values():
    headers = SecretHeaders({"Authorization": "Bearer very-secret", "X-API-Key": "key-secret"})
    for text in (repr(headers), str(headers)):
        assert "very-secret" not in text and "key-secret" not in text and "X-API-Key" in text
    assert headers.secret_values() == ["Bearer very-secret", "very-secret", "key-secret"]


def test_hook_reads_connection_from_environment(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_COMFY_ENV",
        json.dumps(
            {"conn_type": "comfyui", "host": "gpu-9", "port": 8190, "extra": {"token": "env-token-1"}}
        ),
    )
    hook = ComfyUIHook("comfy_env")
    assert hook.base_url == "http://gpu-9:8190"
    assert hook.settings.auth_headers["Authorization"] == "Bearer env-token-1"
    assert hook.get_conn().headers["Authorization"] == "Bearer env-token-1"


def test_hook_from_uri_environment(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_COMFY_URI", "comfyui://bob:pw-12345@gpu-3:443/https?path_prefix=comfy")
    hook = ComfyUIHook("comfy_uri")
    assert hook.base_url == "https://gpu-3:443/comfy"
    assert hook.settings.auth_headers["Authorization"].startswith("Basic ")


def test_ui_field_behaviour():
    behaviour = ComfyUIHook.get_ui_field_behaviour()
    assert "host" in behaviour["relabeling"]
    json.loads(behaviour["placeholders"]["extra"])


def test_null_extras_from_the_ui_form_mean_not_set():
    # A connection saved from the UI stores every extra field of the form, unset ones as null.
    from airflow_comfy.get_provider_info import get_provider_info

    [conn_type] = get_provider_info()["connection-types"]
    nulls = dict.fromkeys(conn_type["conn-fields"], None)
    assert {"token", "headers", "verify", "hosts", "path_prefix", "connect_timeout"} <= set(nulls)
    saved = settings_from_connection(from_json(host="127.0.0.1", extra=nulls))
    default = settings_from_connection(from_json(host="127.0.0.1"))
    assert saved == default
    assert saved.servers == ("http://127.0.0.1:8188",) and dict(saved.auth_headers) == {}


def test_credentials_in_the_host_url_become_basic_auth_and_leave_the_url():
    s = settings_from_connection(from_json(host="http://alice:p%40ss@gpu-1:8000/comfy"))
    assert s.base_url == "http://gpu-1:8000/comfy"
    assert s.auth_headers["Authorization"] == "Basic " + base64.b64encode(b"alice:p@ss").decode()
    assert "p@ss" in s.auth_headers.secret_values()
    assert "p@ss" not in repr(s) and "alice" not in repr(s)
    same = settings_from_connection(from_json(host="alice:p%40ss@gpu-1", login="alice", password="p@ss"))
    assert same.auth_headers["Authorization"] == s.auth_headers["Authorization"]
    pool = settings_from_connection(
        from_json(host="http://alice:pw@gpu-1", extra={"hosts": ["http://alice:pw@gpu-2", "gpu-3"]})
    )
    assert pool.servers == ("http://gpu-1:8188", "http://gpu-2:8188", "http://gpu-3:8188")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"host": "http://alice@gpu-1"}, "user name without a password.*login and password fields"),
        ({"host": "http://alice:pw@gpu-1", "login": "bob", "password": "x"}, "differ from the login"),
        ({"host": "http://a:1@g1", "extra": {"hosts": ["http://b:2@g2"]}}, "different credentials"),
    ],
)
def test_credentials_in_the_host_url_that_cannot_be_used_are_refused(fields, match):
    with pytest.raises(ValueError, match=match) as info:
        settings_from_connection(from_json(**fields))
    assert "pw" not in str(info.value) and ":1@" not in str(info.value)


def test_size_limits_from_extras():
    s = settings_from_connection(from_json(host="h"))
    assert s.max_ws_frame_bytes == 128 << 20 and s.max_download_bytes == 16 << 30
    s = settings_from_connection(from_uri("comfyui://h/?max_ws_frame_bytes=1000&max_download_bytes=2000"))
    assert (s.max_ws_frame_bytes, s.max_download_bytes) == (1000, 2000)
    with pytest.raises(ValueError, match=r"extra\.max_download_bytes must be a positive number of bytes"):
        settings_from_connection(from_json(host="h", extra={"max_download_bytes": 0}))
