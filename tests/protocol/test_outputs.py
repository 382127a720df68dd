"""Output references from history outputs, and where a download may be written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_comfy.protocol.outputs import (
    OutputRef,
    refs_from_outputs,
    safe_local_path,
    safe_relative_parts,
    text_from_outputs,
    unique_refs,
)
from protocol.protocol_transcripts import response_body


def _outputs(name: str) -> dict:
    body = response_body(name)
    (entry,) = body.values()
    return entry["outputs"]


def test_refs_from_recorded_history():
    (ref,) = refs_from_outputs(_outputs("history_done"))
    assert (
        ref.node_id == "2" and ref.kind == "images" and ref.subfolder == "contract" and ref.type == "output"
    )
    assert ref.server_path == f"output/contract/{ref.filename}"
    assert ref.to_dict() == {
        "node_id": "2",
        "kind": "images",
        "filename": ref.filename,
        "subfolder": "contract",
        "type": "output",
    }

    batch = refs_from_outputs(_outputs("history_batch"))
    assert [r.filename for r in batch] == [i["filename"] for i in _outputs("history_batch")["2"]["images"]]
    assert len(batch) == 3

    (preview,) = refs_from_outputs(_outputs("history_preview"))
    assert (
        preview.type == "temp"
        and preview.subfolder == ""
        and preview.server_path == f"temp/{preview.filename}"
    )

    assert refs_from_outputs(_outputs("history_text_output")) == []
    assert text_from_outputs(_outputs("history_text_output")) == {"3": ["320"]}
    assert refs_from_outputs(_outputs("history_error")) == []


def test_animated_text_and_other_kinds():
    outputs = {
        "5": {
            "images": [{"filename": "a.webp", "subfolder": "", "type": "output"}],
            "animated": [True],
        },
        "6": {
            "images": [
                {"filename": "still.png", "subfolder": "s", "type": "output"},
                {"filename": "moving.webp", "subfolder": "s", "type": "output"},
            ],
            "animated": [False, True],
        },
        "7": {
            "gifs": [{"filename": "v.mp4", "subfolder": "vid", "type": "output", "format": "video/h264-mp4"}]
        },
        "8": {"audio": [{"filename": "a.flac", "type": "output"}], "text": ["hello", 3]},
        "9": {"images": [{"no": "filename"}, "junk", {"filename": 5}]},
        "10": "not a mapping",
    }
    refs = refs_from_outputs(outputs)
    assert [(r.node_id, r.kind, r.filename) for r in refs] == [
        ("5", "video", "a.webp"),
        ("6", "images", "still.png"),
        ("6", "video", "moving.webp"),
        ("7", "gifs", "v.mp4"),
        ("8", "audio", "a.flac"),
    ]
    assert refs[-1].subfolder == "" and refs[-1].type == "output"
    assert text_from_outputs(outputs) == {"8": ["hello", "3"]}
    assert refs_from_outputs({}) == [] and refs_from_outputs(None) == []


def test_unique_refs_keeps_order():
    a = OutputRef("1", "images", "a.png")
    b = OutputRef("2", "images", "b.png")
    a_again = OutputRef("3", "images", "a.png")
    other_folder = OutputRef("1", "images", "a.png", type="temp")
    assert unique_refs([a, b, a_again, other_folder, b]) == [a, b, other_folder]


def _inside(path: Path, root: Path) -> bool:
    return root.resolve() in path.parents


@pytest.mark.parametrize(
    ("subfolder", "filename", "expected"),
    [
        ("", "a.png", ["a.png"]),
        ("contract", "a.png", ["contract", "a.png"]),
        ("a/b", "c.png", ["a", "b", "c.png"]),
        ("../..", "x.png", ["x.png"]),
        ("..", "../../etc/passwd", ["passwd"]),
        ("/etc", "/etc/passwd", ["etc", "passwd"]),
        ("..\\..\\win", "..\\evil.png", ["win", "evil.png"]),
        ("C:\\Windows", "C:\\x.png", ["C_", "Windows", "x.png"]),
        ("", "..", ["output"]),
        ("", "", ["output"]),
        ("./.", "./a.png", ["a.png"]),
        ("sub", "nul\x00byte.png", ["sub", "nul_byte.png"]),
        ("", "what?<>|*.png", ["what_____.png"]),
        ("", "  .hidden.png  ", ["hidden.png"]),
    ],
)
def test_safe_relative_parts(subfolder, filename, expected):
    assert safe_relative_parts(subfolder, filename) == expected


@pytest.mark.parametrize(
    ("subfolder", "filename"),
    [
        ("../../..", "escape.png"),
        ("", "../../../escape.png"),
        ("/tmp", "abs.png"),
        ("", "/etc/passwd"),
        ("..\\..", "..\\..\\x.png"),
        ("a/../../..", "b.png"),
        ("sub\x00dir", "x\x00.png"),
        ("\\\\server\\share", "y.png"),
    ],
)
def test_safe_local_path_stays_inside(tmp_path, subfolder, filename):
    dest = tmp_path / "dest"
    dest.mkdir()
    path = safe_local_path(dest, subfolder, filename)
    assert _inside(path, dest)
    assert "\x00" not in str(path)


@pytest.mark.parametrize(
    "name", ["x" * 1000 + ".png", "é" * 300 + ".png", "😀" * 150, "a" * 400 + "." + "b" * 40]
)
def test_very_long_names_are_shortened_and_writable(tmp_path, name):
    path = safe_local_path(tmp_path, "s" * 300, name)
    assert _inside(path, tmp_path)
    for part in path.relative_to(tmp_path.resolve()).parts:
        assert len(part.encode("utf-8")) <= 200
    path.parent.mkdir(parents=True)
    path.write_bytes(b"ok")  # the file system accepts it (names are limited to 255 bytes)
    Path(str(path) + ".part").write_bytes(b"ok")  # and so the hook's temporary name too
    if name.endswith(".png"):
        assert path.suffix == ".png"


def test_long_names_stay_distinct(tmp_path):
    a = safe_local_path(tmp_path, "", "x" * 300 + "a.png")
    b = safe_local_path(tmp_path, "", "x" * 300 + "b.png")
    assert a != b


def test_symlink_inside_dest_is_refused(tmp_path):
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    os.symlink(outside, dest / "link")
    with pytest.raises(ValueError, match="outside"):
        safe_local_path(dest, "link", "x.png")
    os.symlink(outside / "target.png", dest / "file.png")
    with pytest.raises(ValueError, match="outside"):
        safe_local_path(dest, "", "file.png")


def test_symlink_staying_inside_dest_is_fine(tmp_path):
    dest = tmp_path / "dest"
    (dest / "real").mkdir(parents=True)
    os.symlink(dest / "real", dest / "alias")
    assert safe_local_path(dest, "alias", "x.png") == (dest / "real" / "x.png").resolve()


def test_dest_given_as_string_and_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = safe_local_path("out", "sub", "a.png")
    assert path == (tmp_path / "out" / "sub" / "a.png").resolve()
