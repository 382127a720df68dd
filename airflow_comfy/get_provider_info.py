"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

Invariant: every class path listed here imports; ``tests/test_get_provider_info.py`` checks it.
"""

from __future__ import annotations

import json
from typing import Any


def get_provider_info() -> dict[str, Any]:
    from airflow_comfy import __version__

    return {
        "package-name": "airflow-comfy",
        "name": "ComfyUI",
        "description": "Run ComfyUI workflows from Apache Airflow.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "ComfyUI",
                "external-doc-url": "https://github.com/comfyanonymous/ComfyUI",
                "tags": ["software"],
            }
        ],
        "hooks": [{"integration-name": "ComfyUI", "python-modules": ["airflow_comfy.hooks.comfyui"]}],
        "operators": [
            {
                "integration-name": "ComfyUI",
                "python-modules": ["airflow_comfy.operators.comfyui", "airflow_comfy.operators.batch"],
            }
        ],
        "sensors": [{"integration-name": "ComfyUI", "python-modules": ["airflow_comfy.sensors.comfyui"]}],
        "triggers": [
            {
                "integration-name": "ComfyUI",
                "python-modules": ["airflow_comfy.triggers.comfyui", "airflow_comfy.triggers.batch"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "comfyui",
                "hook-class-name": "airflow_comfy.hooks.comfyui.ComfyUIHook",
                "ui-field-behaviour": _ui_field_behaviour(),
                "conn-fields": _conn_fields(),
            }
        ],
        "extra-links": [
            "airflow_comfy.links.ComfyUIWebLink",
            "airflow_comfy.links.ComfyUIOutputLink",
        ],
    }


def ui_field_behaviour() -> dict[str, Any]:
    """The connection form of type ``comfyui`` (``ComfyUIHook.get_ui_field_behaviour`` returns this too)."""
    return {
        "hidden_fields": [],
        "relabeling": {
            "host": "ComfyUI host or URL",
            "schema": "Scheme (http or https)",
            "login": "Username (HTTP Basic, optional)",
            "password": "Password or API token (optional)",
        },
        "placeholders": {
            "host": "127.0.0.1 or https://gpu-1.example.com/comfy",
            "port": "8188",
            "schema": "http",
            "login": "leave empty for a token",
            "password": "Basic password, or a Bearer token when no username is set",
            "extra": json.dumps(
                {
                    "token": "optional Bearer token",
                    "headers": {"X-API-Key": "optional extra header"},
                    "verify": True,
                    "path_prefix": "/comfy",
                    "hosts": ["gpu-2:8188", "https://gpu-3.example.com"],
                    "connect_timeout": 10,
                    "read_timeout": 60,
                    "max_retries": 5,
                },
                indent=1,
            ),
        },
    }


def _ui_field_behaviour() -> dict[str, Any]:
    """The same form in provider-info spelling (``hidden-fields``)."""
    behaviour = ui_field_behaviour()
    return {"hidden-fields": behaviour.pop("hidden_fields"), **behaviour}


def _conn_fields() -> dict[str, Any]:
    def field(label: str, kind: Any, description: str, **extra: Any) -> dict[str, Any]:
        return {"label": label, "schema": {"type": kind, **extra}, "description": description}

    return {
        "token": field(
            "Bearer token", ["string", "null"], "Sent as 'Authorization: Bearer <token>'.", format="password"
        ),
        "headers": field("Extra headers (JSON)", ["object", "null"], 'e.g. {"X-API-Key": "..."}'),
        "verify": field(
            "Verify TLS", ["boolean", "string", "null"], "true (default), false, or a CA bundle path"
        ),
        "path_prefix": field("Path prefix", ["string", "null"], "ComfyUI behind a proxy at /comfy, or /api"),
        "hosts": field(
            "More servers",
            ["array", "string", "null"],
            "Other ComfyUI servers with the same auth: the least loaded one gets each prompt",
        ),
        "connect_timeout": field("Connect timeout (s)", ["number", "null"], "Default 10"),
        "read_timeout": field("Read timeout (s)", ["number", "null"], "Default 60"),
        "max_retries": field(
            "Max retries",
            ["integer", "null"],
            "Retries of connection errors, timeouts, 5xx and 429 (default 5)",
        ),
    }
