"""The provider metadata: every class path imports, and Airflow's own CLI sees the provider and its links."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

from airflow_comfy import __version__
from airflow_comfy.get_provider_info import get_provider_info


def test_every_listed_module_and_class_imports():
    info = get_provider_info()
    assert info["package-name"] == "airflow-comfy"
    assert info["versions"] == [__version__]
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    links = {}
    for path in info["extra-links"]:
        module, _, cls = path.rpartition(".")
        links[path] = getattr(importlib.import_module(module), cls)
    from airflow.sdk import BaseOperatorLink

    from airflow_comfy.operators.comfyui import ComfyUIPromptOperator

    assert all(issubclass(link, BaseOperatorLink) for link in links.values())
    # Every link the prompt operator shows is registered, so the API server can rebuild it.
    assert {type(link) for link in ComfyUIPromptOperator.operator_extra_links} == set(links.values())
    (conn_type,) = info["connection-types"]
    assert conn_type["connection-type"] == "comfyui"
    module, _, cls = conn_type["hook-class-name"].rpartition(".")
    hook_cls = getattr(importlib.import_module(module), cls)
    assert hook_cls.conn_type == "comfyui"
    assert set(conn_type["conn-fields"]) >= {"token", "headers", "verify", "path_prefix"}
    assert conn_type["conn-fields"]["token"]["schema"]["format"] == "password"


def test_airflow_cli_lists_the_provider_and_accepts_the_connection_type(tmp_path: Path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db",
    }
    airflow = [sys.executable, "-m", "airflow"]
    listed = subprocess.run(
        [*airflow, "providers", "list"], env=env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "airflow-comfy" in listed.stdout
    links = subprocess.run(
        [*airflow, "providers", "links", "-o", "plain"], env=env, capture_output=True, text=True, timeout=120
    )
    assert links.returncode == 0, links.stderr[-2000:]
    assert "airflow_comfy.links.ComfyUIWebLink" in links.stdout
    assert "airflow_comfy.links.ComfyUIOutputLink" in links.stdout
    subprocess.run([*airflow, "db", "migrate"], env=env, capture_output=True, timeout=180, check=True)
    added = subprocess.run(
        [
            *airflow,
            "connections",
            "add",
            "comfy_cli",
            "--conn-type",
            "comfyui",
            "--conn-host",
            "127.0.0.1",
            "--conn-port",
            "8188",
            "--conn-extra",
            '{"verify": "false", "token": "s3cr3t"}',
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert added.returncode == 0, added.stderr[-2000:]
    shown = subprocess.run(
        [*airflow, "connections", "get", "comfy_cli", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert '"conn_type": "comfyui"' in shown.stdout
