"""``airflow_comfy.outputs``: XCom records, server paths, downloads (local and object storage), events.

Downloads go through a real ``ComfyUIHook`` against the stand-in (files are planted in its output
folder, including hostile names); event validation is pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from airflow_comfy.exceptions import (
    ComfyUIError,
    ComfyUIExecutionError,
    ComfyUIInterruptedError,
    ComfyUIPromptLostError,
    ComfyUIResponseError,
    ComfyUITimeoutError,
)
from airflow_comfy.hooks.client import ComfyUIClient
from airflow_comfy.hooks.comfyui import ComfyUIHook
from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.outputs import collect_paths, output_records
from airflow_comfy.protocol.outputs import OutputRef, refs_from_outputs
from airflow_comfy.protocol.states import PromptState
from airflow_comfy.protocol.waiting import WaitOutcome
from airflow_comfy.testing import StandInServer

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 3000


@pytest.fixture
def hook(standin: StandInServer) -> Iterator[ComfyUIHook]:
    hook = ComfyUIHook(settings=ComfyUISettings(conn_id="t", base_url=standin.url, max_retries=1))
    yield hook
    hook.close()


def plant(
    server: StandInServer, subfolder: str, name: str, data: bytes = PNG, folder: str = "output"
) -> OutputRef:
    target = server.base_dir / folder / subfolder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return OutputRef(node_id="9", kind="images", filename=name, subfolder=subfolder, type=folder)


# --- records -------------------------------------------------------------------------------------


def test_records_are_json_safe_deduplicated_and_credential_free() -> None:
    refs = [
        OutputRef("9", "images", "a.png", "sub", "output"),
        OutputRef("9", "images", "a.png", "sub", "output"),  # a cached output reported twice
        OutputRef("12", "audio", "b.flac", "", "temp"),
    ]
    records = output_records(refs, "https://ann:s3cret@gpu-1.example.com/comfy")
    assert json.loads(json.dumps(records)) == records
    assert [r["filename"] for r in records] == ["a.png", "b.flac"]
    first, second = records
    assert {k: first[k] for k in ("node_id", "kind", "subfolder", "type")} == {
        "node_id": "9",
        "kind": "images",
        "subfolder": "sub",
        "type": "output",
    }
    assert first["server_path"] == "output/sub/a.png" and second["server_path"] == "temp/b.flac"
    assert (
        first["view_url"] == "https://gpu-1.example.com/comfy/view?filename=a.png&subfolder=sub&type=output"
    )
    assert "s3cret" not in json.dumps(records)


def test_animated_images_are_video_records() -> None:
    outputs = {
        "7": {"images": [{"filename": "v.webp", "subfolder": "", "type": "output"}], "animated": [True]}
    }
    [record] = output_records(refs_from_outputs(outputs), "http://127.0.0.1:1")
    assert record["kind"] == "video"


# --- paths and downloads ---------------------------------------------------------------------------


def test_without_output_dir_the_server_paths_are_returned(hook: ComfyUIHook) -> None:
    refs = [OutputRef("9", "images", "a.png", "x/y", "output"), OutputRef("3", "audio", "s.flac", "", "temp")]
    assert collect_paths(hook, refs, None) == ["output/x/y/a.png", "temp/s.flac"]
    assert collect_paths(hook, refs, None, kinds=["audio"]) == ["temp/s.flac"]


@pytest.mark.parametrize("prefix", ["", "file://"])
def test_local_output_dir_gets_every_file(
    standin: StandInServer, hook: ComfyUIHook, tmp_path: Path, prefix: str
) -> None:
    refs = [plant(standin, "a/b", "one.png"), plant(standin, "", "two.png", b"2" * 10, folder="temp")]
    paths = collect_paths(hook, refs, prefix + str(tmp_path / "out"))
    assert paths == [str(tmp_path / "out/a/b/one.png"), str(tmp_path / "out/two.png")]
    assert Path(paths[0]).read_bytes() == PNG and Path(paths[1]).read_bytes() == b"2" * 10


def test_hostile_names_never_escape_the_output_dir(
    standin: StandInServer, hook: ComfyUIHook, tmp_path: Path
) -> None:
    plant(standin, "", "evil.png")
    hostile = OutputRef("9", "images", "../../evil.png", "../../..", "output")
    out = tmp_path / "deep" / "out"
    try:
        paths = collect_paths(hook, [hostile], out)
    except ComfyUIError:  # refusing is fine too; writing outside is not
        paths = []
    for path in paths:
        assert Path(path).resolve().is_relative_to(out.resolve())
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(standin.base_dir)]
    assert all(p.is_relative_to(out) for p in written)


class BytesClient(ComfyUIClient):
    """Serves any requested name (hostile ones too) with fixed bytes, like a hostile server would."""

    def __init__(self) -> None:
        super().__init__(ComfyUISettings(conn_id="bytes", base_url="http://127.0.0.1:1"))
        self.asked: list[tuple[str, str, str]] = []

    @contextmanager
    def view(
        self, filename: str, subfolder: str = "", folder_type: str = "output", **_: Any
    ) -> Iterator[Any]:
        self.asked.append((filename, subfolder, folder_type))

        class Response:
            headers: dict[str, str] = {}  # noqa: RUF012 - no Content-Length, like a chunked answer

            def iter_content(self, chunk_size: int = 1) -> Iterator[bytes]:
                yield PNG

        yield Response()


def test_object_storage_output_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.io import fs
    from fsspec.implementations.memory import MemoryFileSystem

    fs._register_filesystems.cache_clear()
    monkeypatch.setitem(fs._BUILTIN_SCHEME_TO_FS, "memory", lambda _c, _o=None: MemoryFileSystem())
    hook = BytesClient()
    refs = [
        OutputRef("9", "images", "pic.png", "s", "output"),
        OutputRef("9", "images", "../../../escape.png", "../..", "output"),
    ]
    try:
        paths = collect_paths(hook, refs, "memory://bucket/prefix")  # type: ignore[arg-type]
        assert ObjectStoragePath(paths[0]).read_bytes() == PNG
    finally:
        fs._register_filesystems.cache_clear()
    assert paths == ["memory://bucket/prefix/s/pic.png", "memory://bucket/prefix/escape.png"]
    assert hook.asked[0] == ("pic.png", "s", "output")


def test_local_scheme_goes_through_object_storage(
    standin: StandInServer, hook: ComfyUIHook, tmp_path: Path
) -> None:
    refs = [plant(standin, "k", "pic.png")]
    [path] = collect_paths(hook, refs, f"local://{tmp_path}/os")
    assert path.endswith("/os/k/pic.png")
    assert (tmp_path / "os/k/pic.png").read_bytes() == PNG


# --- trigger events ------------------------------------------------------------------------------


def success_event(**extra: object) -> dict[str, object]:
    return {
        "status": "success",
        "prompt_id": "p1",
        "base_url": "http://127.0.0.1:1",
        "outputs": [
            {"node_id": "9", "kind": "images", "filename": "a.png", "subfolder": "", "type": "output"}
        ],
        "texts": {"4": ["hello"]},
        "failure": None,
        **extra,
    }


def test_success_event_becomes_a_status() -> None:
    status = WaitOutcome.from_payload(success_event()).result()
    assert status.state is PromptState.SUCCESS and status.prompt_id == "p1"
    assert [ref.server_path for ref in status.outputs] == ["output/a.png"]
    assert dict(status.texts) == {"4": ["hello"]}


@pytest.mark.parametrize(
    ("event", "error", "text"),
    [
        (None, ComfyUIResponseError, "without a prompt id"),
        ({"status": "success"}, ComfyUIResponseError, "without a prompt id"),
        ({"status": "success", "prompt_id": 7}, ComfyUIResponseError, "without a prompt id"),
        ({"status": "odd", "prompt_id": "p1"}, ComfyUIResponseError, "unknown status"),
        ({"status": "pending", "prompt_id": "p1"}, ComfyUIResponseError, "was pending"),
        ({"status": "not_found", "prompt_id": "p1"}, ComfyUIResponseError, "was not_found"),
        ({"status": "lost", "prompt_id": "p1", "message": "gone"}, ComfyUIPromptLostError, "gone"),
        ({"status": "timeout", "prompt_id": "p1", "message": "late"}, ComfyUITimeoutError, "late"),
        ({"status": "failed", "prompt_id": "p1", "message": "no route"}, ComfyUIError, "no route"),
        (
            {
                "status": "error",
                "prompt_id": "p1",
                "failure": {
                    "node_id": "3",
                    "node_type": "KSampler",
                    "exception_type": "torch.OutOfMemoryError",
                    "exception_message": "CUDA out of memory",
                },
            },
            ComfyUIExecutionError,
            r"node 3 \(KSampler\): torch.OutOfMemoryError: CUDA out of memory",
        ),
        (
            {
                "status": "interrupted",
                "prompt_id": "p1",
                "failure": {"node_id": "3", "node_type": "KSampler"},
            },
            ComfyUIInterruptedError,
            "interrupted",
        ),
    ],
)
def test_invalid_and_failed_events_raise(event: object, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        WaitOutcome.from_payload(event).result()


def test_malformed_output_items_are_skipped() -> None:
    status = WaitOutcome.from_payload(
        success_event(outputs=["junk", None, {"filename": "b.png", "type": "temp"}])
    ).result()
    assert [(ref.filename, ref.type, ref.subfolder) for ref in status.outputs] == [("b.png", "temp", "")]
