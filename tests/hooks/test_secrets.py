"""Credentials never show up in logs, exception messages, reprs or settings."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from airflow_comfy.exceptions import ComfyUIError
from airflow_comfy.hooks.comfyui import ComfyUIHook
from hooks.hook_helpers import empty_save, failing, fake_http

PASSWORD = "pw-Sup3rSecret-4711"
TOKEN = "tok-Sup3rSecret-0815"
API_KEY = "key-Sup3rSecret-1337"
AUTHS = {
    "basic": ({"login": "alice", "password": PASSWORD}, [PASSWORD]),
    "bearer": ({"password": TOKEN}, [TOKEN]),
    "token": ({"extra": {"token": TOKEN}}, [TOKEN]),
    "header": ({"extra": {"headers": {"X-API-Key": API_KEY}}}, [API_KEY]),
}


def _secrets(kind: str) -> list[str]:
    values = list(AUTHS[kind][1])
    if kind == "basic":
        values.append(base64.b64encode(f"alice:{PASSWORD}".encode()).decode())
    return values


def _hook(monkeypatch, kind: str, url: str, retries: int = 1) -> ComfyUIHook:
    fields, _ = AUTHS[kind]
    host, port = url.removeprefix("http://").split(":")
    extra = {
        **fields.get("extra", {}),
        "retry_min_wait": 0.01,
        "retry_max_wait": 0.02,
        "max_retries": retries,
    }
    conn = {
        "conn_type": "comfyui",
        "host": host,
        "port": int(port),
        **{k: v for k, v in fields.items() if k != "extra"},
    }
    conn["extra"] = extra
    monkeypatch.setenv("AIRFLOW_CONN_COMFY_SECRET", json.dumps(conn))
    return ComfyUIHook("comfy_secret")


def _assert_clean(kind: str, *texts: str) -> None:
    for text in texts:
        for secret in _secrets(kind):
            assert secret not in text, f"{kind} secret leaked in: {text[:300]}"


def _describe(exc: BaseException) -> str:
    return "\n".join([str(exc), repr(exc), repr(exc.args), repr(vars(exc))])


@pytest.mark.parametrize("kind", list(AUTHS))
def test_no_secret_in_a_normal_run(monkeypatch, standin, caplog, capsys, kind):
    caplog.set_level(logging.DEBUG)
    hook = _hook(monkeypatch, kind, standin.url)
    assert hook.settings.auth_headers  # the credential is really configured...
    answer = hook.submit_prompt(empty_save(), client_id="secret-client")
    status = hook.wait_for_prompt(
        answer["prompt_id"], client_id="secret-client", check_interval=0.1, timeout=20
    )
    assert status.state.value == "success"
    with pytest.raises(ComfyUIError) as failed:
        other = hook.submit_prompt(failing(), client_id="secret-client")
        hook.wait_for_prompt(other["prompt_id"], client_id="secret-client", check_interval=0.1, timeout=20)
    workflow = empty_save()
    workflow["1"]["inputs"]["width"] = 0
    with pytest.raises(ComfyUIError) as rejected:
        hook.submit_prompt(workflow)
    standin.faults.fail_next(1, status=503, path="/queue")  # a retry gets logged
    hook.get_queue()
    captured = capsys.readouterr()
    _assert_clean(
        kind,
        caplog.text,
        captured.out,
        captured.err,
        _describe(failed.value),
        _describe(rejected.value),
        repr(hook.settings),
        str(hook.settings),
        repr(hook.settings.auth_headers),
        repr(hook),
        repr(vars(hook)),
        hook.base_url,
        hook.websocket("x").url,
        hook.websocket("x").shown_url,
    )
    assert "retrying" in caplog.text + captured.out  # the logs were captured, not empty


@pytest.mark.parametrize("kind", list(AUTHS))
def test_no_secret_when_refused(monkeypatch, free_port_url, caplog, capsys, kind):
    caplog.set_level(logging.DEBUG)
    hook = _hook(monkeypatch, kind, free_port_url)
    errors = []
    for call in (
        lambda: hook.submit_prompt(empty_save()),
        hook.get_queue,
        lambda: hook.websocket("c").connect(),
        lambda: hook.wait_for_prompt(
            "p", client_id="c", check_interval=0.05, timeout=0.3, unreachable_grace=0.1
        ),
    ):
        with pytest.raises(ComfyUIError) as info:
            call()
        errors.append(info.value)
    ok, message = hook.test_connection()
    assert not ok
    captured = capsys.readouterr()
    _assert_clean(kind, caplog.text, captured.out, captured.err, message, *(_describe(e) for e in errors))
    assert "refused" in str(errors[0])


@pytest.mark.parametrize("kind", list(AUTHS))
def test_no_secret_on_401(monkeypatch, caplog, capsys, kind):
    caplog.set_level(logging.DEBUG)
    body = b"<html>401 Unauthorized</html>"
    with fake_http(401, body) as (url, seen):
        hook = _hook(monkeypatch, kind, url)
        errors = []
        for call in (
            lambda: hook.submit_prompt(empty_save()),
            hook.get_queue,
            lambda: hook.websocket("c").connect(),
        ):
            with pytest.raises(ComfyUIError) as info:
                call()
            errors.append(info.value)
        ok, message = hook.test_connection()
    assert not ok and "401" in message
    # The credential was really sent (so a leak would have had something to leak).
    sent = "\n".join(json.dumps(r["headers"]) for r in seen)
    assert any(secret in sent for secret in _secrets(kind))
    captured = capsys.readouterr()
    _assert_clean(kind, caplog.text, captured.out, captured.err, message, *(_describe(e) for e in errors))


def test_credentials_in_host_url_are_dropped(monkeypatch, standin):
    host = standin.url.replace("http://", f"http://alice:{PASSWORD}@")
    monkeypatch.setenv("AIRFLOW_CONN_COMFY_URLCRED", json.dumps({"conn_type": "comfyui", "host": host}))
    hook = ComfyUIHook("comfy_urlcred")
    assert PASSWORD not in hook.base_url and hook.base_url == standin.url
