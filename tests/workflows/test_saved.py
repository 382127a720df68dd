"""Workflows saved on the server (``comfyui://workflows/...``): naming, loading, hashing, identity.

Loading goes through any object with ``get_userdata``/``list_userdata``; the stand-in and the hook
are used end to end, a small fake for the error paths.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from airflow_comfy.exceptions import ComfyUIHTTPError, ComfyUIWorkflowError
from airflow_comfy.hooks.comfyui import ComfyUIHook
from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.testing.userdata import save_userdata
from airflow_comfy.workflows import (
    SHA256_XCOM_KEY,
    load_saved_workflow,
    load_workflow,
    prepare_workflow,
    resolve_source,
    saved_identity,
    saved_path,
    saved_record,
)

DATA = Path(__file__).parent / "data"


class FakeUserData:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.calls: list[str] = []

    def get_userdata(self, path: str) -> bytes:
        self.calls.append(path)
        if path not in self.files:
            raise ComfyUIHTTPError("404", url=f"/userdata/{path}", status_code=404)
        return self.files[path]

    def list_userdata(self, directory: str = "workflows") -> list[str]:
        prefix = directory + "/"
        return sorted(p[len(prefix) :] for p in self.files if p.startswith(prefix))


@pytest.mark.parametrize(
    ("source", "path"),
    [
        ("comfyui://workflows/portraits/headshot.json", "workflows/portraits/headshot.json"),
        ("comfyui://portraits/headshot.json", "workflows/portraits/headshot.json"),
        ("comfyui://workflows/portraits/headshot", "workflows/portraits/headshot.json"),
        (" comfyui://workflows/a.json ", "workflows/a.json"),
        ("workflows/a.json", None),
        ({"nodes": []}, None),
    ],
)
def test_saved_path(source, path):
    assert saved_path(source) == path


@pytest.mark.parametrize(
    "source", ["comfyui://", "comfyui://../secrets.json", "comfyui://workflows/../../x.json"]
)
def test_saved_path_refuses_paths_outside_the_user_folder(source):
    with pytest.raises(ComfyUIWorkflowError):
        saved_path(source)


def test_load_hashes_the_exact_bytes_saved():
    raw = (DATA / "ui" / "default.json").read_bytes()
    saved = load_saved_workflow(
        FakeUserData({"workflows/default.json": raw}), "comfyui://workflows/default.json"
    )
    assert saved.sha256 == hashlib.sha256(raw).hexdigest()
    assert saved.workflow == json.loads(raw)
    assert saved.source == "comfyui://workflows/default.json"
    assert saved_identity(saved) == {"saved_workflow": saved.source, "sha256": saved.sha256}
    assert saved_record(saved) == {"workflow_source": saved.source, SHA256_XCOM_KEY: saved.sha256}


def test_a_resaved_workflow_is_new_work_the_same_version_is_not():
    raw = (DATA / "ui" / "default.json").read_bytes()
    fake = FakeUserData({"workflows/a.json": raw})
    first = saved_identity(load_saved_workflow(fake, "comfyui://workflows/a.json"))
    again = saved_identity(load_saved_workflow(fake, "comfyui://workflows/a.json"))
    fake.files["workflows/a.json"] = raw + b"\n"  # saved again: other bytes, another version
    resaved = saved_identity(load_saved_workflow(fake, "comfyui://workflows/a.json"))
    assert first == again and resaved != first


def test_missing_workflow_lists_close_names_at_once():
    files = {
        f"workflows/{name}": b"{}"
        for name in ("portraits/headshot-v2.json", "portraits/headshots.json", "landscape.json")
    }
    fake = FakeUserData(files)
    with pytest.raises(ComfyUIWorkflowError) as caught:
        load_saved_workflow(
            fake, "comfyui://workflows/portraits/headshot.json", where="http://127.0.0.1:8188"
        )
    message = str(caught.value)
    assert "no workflow is saved as workflows/portraits/headshot.json on http://127.0.0.1:8188" in message
    assert (
        "workflows/portraits/headshots.json" in message and "workflows/portraits/headshot-v2.json" in message
    )
    assert "landscape" not in message
    assert fake.calls == ["workflows/portraits/headshot.json"]  # one read, no retry


def test_missing_workflow_on_a_server_without_saved_workflows():
    with pytest.raises(ComfyUIWorkflowError, match="it has no saved workflows"):
        load_saved_workflow(FakeUserData({}), "comfyui://workflows/a.json")


def test_saved_file_that_is_not_a_workflow():
    with pytest.raises(
        ComfyUIWorkflowError, match=r"saved workflow workflows/a\.json on the server is not JSON"
    ):
        load_saved_workflow(FakeUserData({"workflows/a.json": b"{not json"}), "comfyui://workflows/a.json")
    with pytest.raises(ComfyUIWorkflowError, match=r"saved workflow workflows/b\.json"):
        load_saved_workflow(FakeUserData({"workflows/b.json": b"[1, 2]"}), "comfyui://workflows/b.json")


def test_other_http_errors_are_not_hidden():
    class Broken(FakeUserData):
        def get_userdata(self, path: str) -> bytes:
            raise ComfyUIHTTPError("503", url=path, status_code=503)

    with pytest.raises(ComfyUIHTTPError):
        load_saved_workflow(Broken({}), "comfyui://workflows/a.json")


def test_load_workflow_points_at_the_server_for_saved_sources():
    with pytest.raises(ComfyUIWorkflowError, match="saved on a ComfyUI server"):
        load_workflow("comfyui://workflows/a.json")
    with pytest.raises(ComfyUIWorkflowError, match="give a server"):
        resolve_source("comfyui://workflows/a.json", None)


def test_resolve_source_other_sources_unchanged():
    workflow, saved = resolve_source(DATA / "api" / "default.json", None)
    assert saved is None and workflow == json.loads((DATA / "api" / "default.json").read_text())


def test_saved_on_the_standin_through_the_hook(standin, object_info):
    raw = (DATA / "ui" / "default.json").read_bytes()
    save_userdata(standin.base_dir, "workflows/portraits/headshot.json", raw)
    hook = ComfyUIHook(settings=ComfyUISettings(conn_id="saved", base_url=standin.url, max_retries=0))
    assert hook.list_userdata() == ["portraits/headshot.json"]
    workflow, saved = resolve_source("comfyui://workflows/portraits/headshot.json", hook)
    assert saved is not None and saved.sha256 == hashlib.sha256(raw).hexdigest()
    api = prepare_workflow(workflow, object_info=object_info)
    assert api == prepare_workflow(DATA / "ui" / "default.json", object_info=object_info)
    with pytest.raises(ComfyUIWorkflowError, match=r"did you mean: workflows/portraits/headshot\.json"):
        load_saved_workflow(hook, "comfyui://workflows/portraits/headshots.json", where=standin.url)
