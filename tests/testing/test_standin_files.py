"""/view, /upload/image and the info routes of the stand-in, against the recorded answers."""

from __future__ import annotations

import io
import json

import pytest
import requests
from PIL import Image
from standin_helpers import load_transcript, png_bytes, run, upload


@pytest.fixture
def saved(standin, contract_workflows) -> dict:
    """One output image in subfolder ``contract`` (like batch_00025_.png in the transcripts)."""
    return run(standin, contract_workflows["batch_of_3"])["outputs"]["2"]["images"][0]


def _view(server, **params):
    return requests.get(server.url + "/view", params=params, timeout=10)


def test_view_output_and_headers(standin, saved) -> None:
    response = _view(standin, filename=saved["filename"], subfolder="contract", type="output")
    recorded = load_transcript("view_output")["response"]
    assert response.status_code == 200
    assert response.headers["Content-Type"] == recorded["headers"]["Content-Type"]
    assert response.headers["Content-Disposition"] == f'filename="{saved["filename"]}"'
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert Image.open(io.BytesIO(response.content)).size == (40, 30)
    annotated = _view(standin, filename=f"{saved['filename']} [output]", subfolder="contract", type="input")
    assert annotated.content == response.content


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"filename": "contract/{name}", "type": "output"}, 404),
        ({"filename": "nope_00001_.png", "type": "output"}, 404),
        ({"type": "output"}, 404),
        ({"filename": "{name}", "type": "secret"}, 400),
        ({"filename": "../x.png", "type": "output"}, 400),
        ({"filename": "/etc/passwd", "type": "output"}, 400),
        ({"filename": "{name}", "subfolder": "..", "type": "output"}, 403),
        ({"filename": "passwd", "subfolder": "../../../../../../etc", "type": "output"}, 403),
        ({"filename": "passwd", "subfolder": "/etc", "type": "output"}, 403),
    ],
)
def test_view_refusals(standin, saved, params: dict, status: int) -> None:
    params = {k: v.format(name=saved["filename"]) for k, v in params.items()}
    response = _view(standin, **params)
    assert (response.status_code, response.content) == (status, b"")


def test_view_reencodings(standin, saved) -> None:
    webp = _view(standin, filename=saved["filename"], subfolder="contract", type="output", preview="webp;50")
    assert webp.headers["Content-Type"] == "image/webp" and webp.content[:4] == b"RIFF"
    rgb = _view(standin, filename=saved["filename"], subfolder="contract", type="output", channel="rgb")
    assert rgb.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(rgb.content)).mode == "RGB"


def test_view_streams_large_files(standin) -> None:
    big = standin.base_dir / "output" / "big.bin"
    with open(big, "wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    with requests.get(
        standin.url + "/view", params={"filename": "big.bin"}, stream=True, timeout=30
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/octet-stream"
        total = sum(len(chunk) for chunk in response.iter_content(1 << 20))
    assert total == 64 * 1024 * 1024


def test_upload_rules(standin) -> None:
    first = upload(
        standin, "contract_upload.png", png_bytes(), type="input", subfolder="contract", overwrite="true"
    )
    assert first.json() == load_transcript("upload_image")["response"]["body"]
    same = upload(standin, "contract_upload.png", png_bytes(), type="input", subfolder="contract")
    assert same.json()["name"] == "contract_upload.png"
    other = upload(standin, "contract_upload.png", png_bytes((1, 2, 3)), type="input", subfolder="contract")
    assert other.json() == load_transcript("upload_image_renamed")["response"]["body"]
    view = _view(standin, filename="contract_upload.png", subfolder="contract", type="input")
    assert view.content == png_bytes()
    no_file = requests.post(standin.url + "/upload/image", files={"other": ("x.txt", b"x")}, timeout=10)
    assert (no_file.status_code, no_file.content) == (400, b"")
    evil = upload(standin, "evil.png", png_bytes(), type="input", subfolder="../..")
    assert (evil.status_code, evil.content) == (400, b"")
    assert not (standin.base_dir.parent / "evil.png").exists()


def test_load_image_runs_on_uploads_and_fails_on_corrupt_files(standin, contract_workflows) -> None:
    upload(standin, "contract_upload.png", png_bytes((10, 20, 30)), subfolder="contract", overwrite="true")
    entry = run(standin, contract_workflows["load_invert_save"])
    image = entry["outputs"]["3"]["images"][0]
    data = _view(standin, filename=image["filename"], subfolder=image["subfolder"]).content
    assert Image.open(io.BytesIO(data)).getpixel((0, 0)) == (245, 235, 225)
    upload(standin, "contract_upload.png", b"not an image at all", subfolder="contract", overwrite="true")
    broken = run(standin, contract_workflows["load_invert_save"])
    failure = broken["status"]["messages"][-1][1]
    assert failure["exception_type"] == "PIL.UnidentifiedImageError"
    assert failure["node_id"] == "1" and failure["executed"] == []


def test_info_routes(standin) -> None:
    def get(path):
        return requests.get(standin.url + path, timeout=10)

    for name, path in [("embeddings", "/embeddings"), ("models", "/models"), ("features", "/features")]:
        assert get(path).json() == load_transcript(name)["response"]["body"]
    assert get("/models/checkpoints").json() == []
    assert (get("/models/nosuchfolder").status_code, get("/models/nosuchfolder").content) == (404, b"")
    stats = get("/system_stats").json()
    recorded = load_transcript("system_stats")["response"]["body"]
    assert set(stats) == set(recorded) and set(stats["system"]) == set(recorded["system"])
    assert set(stats["devices"][0]) == set(recorded["devices"][0])
    unknown = get("/no/such/route")
    assert (unknown.status_code, unknown.content) == (404, b"")
    assert unknown.headers["Content-Type"] == "application/octet-stream"
    assert get("/api/queue").json() == get("/queue").json()


def test_object_info(standin) -> None:
    info = requests.get(standin.url + "/object_info", timeout=30).json()
    recorded = load_transcript("object_info")["response"]["body"]
    assert set(recorded) <= set(info)
    assert info["StandInDelay"]["category"] == info["StandInFail"]["category"] == "stand-in"
    assert info["ImageBlur"] == recorded["ImageBlur"]
    upload = standin.base_dir / "input" / "a.png"
    upload.write_bytes(b"x")
    one = requests.get(standin.url + "/object_info/LoadImage", timeout=10).json()
    assert one["LoadImage"]["input"]["required"]["image"] == [["a.png"], {"image_upload": True}]
    assert (
        requests.get(standin.url + "/object_info/SaveImage", timeout=10).json()
        == load_transcript("object_info_SaveImage")["response"]["body"]
    )
    assert requests.get(standin.url + "/object_info/NoSuchNode", timeout=10).json() == {}
    json.dumps(info)  # serialisable end to end
