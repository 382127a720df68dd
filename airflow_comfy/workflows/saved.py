"""Workflows saved on the ComfyUI server (the web UI's "Save"), named ``comfyui://workflows/<name>.json``.

The web UI keeps a user's saved workflows in the server's user data (``workflows/`` under the
user's folder, read with ``GET /userdata/{path}``). A pipeline names one with a source string such
as ``"comfyui://workflows/portraits/headshot.json"`` and always runs the version saved now:

- :func:`saved_path` recognises the form and gives the user-data path (``workflows/...``);
- :func:`load_saved_workflow` reads it through anything with ``get_userdata(path) -> bytes`` and
  ``list_userdata(dir) -> list[str]`` (:class:`~airflow_comfy.hooks.comfyui.ComfyUIHook` has both:
  auth, TLS and retries come from the connection), parses it, and records the SHA-256 of the exact
  bytes saved; a missing file fails at once, listing the closest saved names;
- :func:`saved_identity` is what the prompt id is derived from for such a source: the path and the
  content hash, so a re-saved workflow is new work and a retry of the same version re-attaches;
- :func:`saved_record` is what a run records (XCom ``workflow_sha256``, Asset event extra).

Invariant: nothing here talks to a server except through the object it is given, and every
failure is a :class:`~airflow_comfy.exceptions.ComfyUIWorkflowError` naming the source.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import posixpath
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_comfy.exceptions import ComfyUIHTTPError, ComfyUIWorkflowError
from airflow_comfy.workflows.load import SAVED_SCHEME, copy_json, detect_format, load_workflow

SCHEME = SAVED_SCHEME
WORKFLOWS_DIR = "workflows"
SHA256_XCOM_KEY = "workflow_sha256"
CLOSE_NAMES = 5


class UserData(Protocol):
    """What loading a saved workflow needs from a hook."""

    def get_userdata(self, path: str) -> bytes: ...

    def list_userdata(self, directory: str = WORKFLOWS_DIR) -> list[str]: ...


@dataclass(frozen=True)
class SavedWorkflow:
    """One saved workflow as read now: its user-data path, content and the SHA-256 of its bytes."""

    path: str
    workflow: dict[str, Any]
    sha256: str

    @property
    def source(self) -> str:
        return SCHEME + self.path


def saved_path(source: Any) -> str | None:
    """The user-data path of a ``comfyui://`` source (``"workflows/a/b.json"``), else None.

    ``comfyui://portraits/headshot.json`` is read in ``workflows/`` too (where the web UI saves);
    the ``.json`` suffix may be left out. Paths that leave the user's folder are refused.
    """
    if not isinstance(source, str) or not source.strip().startswith(SCHEME):
        return None
    name = source.strip()[len(SCHEME) :].strip("/")
    if not name:
        raise ComfyUIWorkflowError(f"{source!r} names no saved workflow: use comfyui://workflows/<name>.json")
    normalized = posixpath.normpath(name)
    if normalized.startswith("..") or "\\" in name or normalized == ".":
        raise ComfyUIWorkflowError(f"{source!r} leaves the server's user data folder")
    if normalized.split("/", 1)[0] != WORKFLOWS_DIR:
        normalized = f"{WORKFLOWS_DIR}/{normalized}"
    return normalized if normalized.endswith(".json") else normalized + ".json"


def is_saved_source(source: Any) -> bool:
    return saved_path(source) is not None


def load_saved_workflow(userdata: UserData, source: str, *, where: str = "the server") -> SavedWorkflow:
    """Read the saved workflow ``source`` names, through ``userdata`` (e.g. a ComfyUIHook)."""
    path = saved_path(source)
    if path is None:
        raise ComfyUIWorkflowError(
            f"{source!r} is not a saved-workflow source ({SCHEME}workflows/<name>.json)"
        )
    try:
        raw = userdata.get_userdata(path)
    except ComfyUIHTTPError as exc:
        if exc.status_code != 404:
            raise
        raise ComfyUIWorkflowError(_missing_message(userdata, path, where)) from None
    try:
        workflow = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ComfyUIWorkflowError(f"saved workflow {path} on {where} is not JSON: {exc}") from None
    try:
        detect_format(workflow)
    except ComfyUIWorkflowError as exc:
        raise ComfyUIWorkflowError(f"saved workflow {path} on {where}: {exc}") from None
    return SavedWorkflow(path, workflow, hashlib.sha256(raw).hexdigest())


def _missing_message(userdata: UserData, path: str, where: str) -> str:
    names = userdata.list_userdata(WORKFLOWS_DIR)
    message = f"no workflow is saved as {path} on {where}"
    if not names:
        return message + " (it has no saved workflows)"
    wanted = path[len(WORKFLOWS_DIR) + 1 :]
    close = difflib.get_close_matches(wanted, names, n=CLOSE_NAMES, cutoff=0.6)
    stem = posixpath.splitext(posixpath.basename(wanted))[0].lower()
    containing = [name for name in names if stem in name.lower() and name not in close]
    close += containing[: CLOSE_NAMES - len(close)]
    shown = [f"{WORKFLOWS_DIR}/{name}" for name in (close or names[:20])]
    if close:
        return message + "; did you mean: " + ", ".join(shown) + f"? ({len(names)} saved workflows)"
    return message + "; saved workflows: " + ", ".join(shown) + (" ..." if len(names) > 20 else "")


def resolve_source(
    source: Any, userdata: UserData | None, *, where: str = "the server"
) -> tuple[dict[str, Any], SavedWorkflow | None]:
    """The workflow ``source`` names, fresh, and its saved version when it is a ``comfyui://`` source.

    Any other source (dict, JSON text, file path) is loaded as :func:`load_workflow` does.
    """
    if not is_saved_source(source):
        return load_workflow(source), None
    if userdata is None:
        raise ComfyUIWorkflowError(f"{source!r} is saved on a ComfyUI server: give a server to read it from")
    saved = load_saved_workflow(userdata, source, where=where)
    return copy_json(saved.workflow), saved


def saved_identity(saved: SavedWorkflow) -> dict[str, str]:
    """What stands for the workflow in the prompt identity: where it is saved and what it holds."""
    return {"saved_workflow": saved.source, "sha256": saved.sha256}


def saved_record(saved: SavedWorkflow) -> dict[str, str]:
    """What a run records about the version it ran (XCom values, Asset event extra)."""
    return {"workflow_source": saved.source, SHA256_XCOM_KEY: saved.sha256}
