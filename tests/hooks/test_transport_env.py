"""The transport reads the environment's proxy and CA settings once, when its session is made."""

from __future__ import annotations

import pytest

from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.hooks.transport import Transport


def test_proxies_and_ca_bundle_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corp.pem")
    outside = Transport(ComfyUISettings(conn_id="c", base_url="https://gpu.example:8188")).session
    assert outside.proxies.get("https") == "http://proxy.example:3128"
    assert outside.verify == "/etc/ssl/corp.pem" and outside.trust_env is False
    inside = Transport(ComfyUISettings(conn_id="c", base_url="https://internal.example")).session
    assert "https" not in inside.proxies  # NO_PROXY honoured
    pinned = Transport(ComfyUISettings(conn_id="c", base_url="https://gpu.example", verify="/ca.pem")).session
    assert pinned.verify == "/ca.pem"  # the connection's own CA wins
