"""Contract: /upload/image (duplicates, renames, refusals) and /view (each recorded case)."""

from __future__ import annotations

import random

import pytest
import requests

from .checks import check_entry, check_response, workflow
from .clients import Comfy
from .shapes import load, tiny_png, token

pytestmark = pytest.mark.timeout(240)

# --------------------------------------------------------------------------------------------------
# upload and /view


def upload(comfy: Comfy, name: str, data: bytes, **fields: str) -> requests.Response:
    return comfy.post("/upload/image", files={"image": (name, data, "image/png")}, data=fields)


def test_upload_duplicate_renamed_view_and_loadimage(comfy: Comfy) -> None:
    stem = f"contract_{token()}"
    name = f"{stem}.png"
    mapping = {"contract_upload.png": name, "contract_upload (1).png": f"{stem} (1).png"}
    png = tiny_png(seed=random.randrange(1 << 30))

    ok = upload(comfy, name, png, type="input", subfolder="contract", overwrite="true")
    assert check_response(load("upload_image")["response"], ok, mapping) == {
        "name": name,
        "subfolder": "contract",
        "type": "input",
    }

    dup = upload(comfy, name, png, type="input", subfolder="contract")
    assert check_response(load("upload_image_duplicate")["response"], dup, mapping)["name"] == name

    other = tiny_png(seed=random.randrange(1 << 30))
    renamed = upload(comfy, name, other, type="input", subfolder="contract")
    assert (
        check_response(load("upload_image_renamed")["response"], renamed, mapping)["name"]
        == f"{stem} (1).png"
    )

    rec = load("view_input_upload")
    view = comfy.get("/view", params={"filename": name, "subfolder": "contract", "type": "input"})
    assert check_response(rec["response"], view, mapping) == png

    steps = load("prompt_loadimage_uploaded")["steps"]
    prompt = workflow("load_invert_save")
    prompt["1"]["inputs"]["image"] = f"contract/{name}"
    body = check_response(steps[0]["response"], comfy.replay(steps[0]["request"], json={"prompt": prompt}))
    entry = comfy.wait_history(body["prompt_id"])
    check_entry(steps[1]["response"]["body"], entry, body["prompt_id"], "LoadImage of the upload")
    assert entry["status"]["status_str"] == "success"


def test_upload_no_file(comfy: Comfy) -> None:
    rec = load("upload_image_no_file")
    response = comfy.post(
        "/upload/image", files={"other": ("x.txt", b"x", "text/plain")}, data={"type": "input"}
    )
    check_response(rec["response"], response)


def test_upload_traversal(comfy: Comfy) -> None:
    rec = load("upload_image_traversal")
    response = upload(comfy, f"evil_{token()}.png", tiny_png(1), type="input", subfolder="../..")
    check_response(rec["response"], response)


VIEW_CASES = [
    "view_output",
    "view_temp",
    "view_input_upload",
    "view_preview_webp",
    "view_channel_rgb",
    "view_annotated_filename",
    "view_filename_with_slash",
    "view_missing",
    "view_no_filename",
    "view_bad_type",
    "view_traversal_filename",
    "view_absolute_filename",
    "view_traversal_subfolder",
    "view_traversal_subfolder_etc",
    "view_absolute_subfolder",
]


@pytest.fixture
def view_files(comfy: Comfy) -> dict[str, str]:
    """Recorded file name -> a file of ours of the same kind on the server under test."""
    out_entry = comfy.wait_history(comfy.submit(workflow("batch_of_3"))["prompt_id"])
    temp_entry = comfy.wait_history(comfy.submit(workflow("preview_temp"))["prompt_id"])
    output_name = out_entry["outputs"]["2"]["images"][0]["filename"]
    temp_name = temp_entry["outputs"]["2"]["images"][0]["filename"]
    upload_name = f"contract_{token()}.png"
    response = upload(
        comfy, upload_name, tiny_png(random.randrange(1 << 30)), type="input", subfolder="contract"
    )
    assert response.status_code == 200
    return {
        "batch_00025_.png": output_name,
        "ComfyUI_temp_lopif_00001_.png": temp_name,
        "contract_upload.png": response.json()["name"],
        "nope_00001_.png": f"nope_{token()}_00001_.png",
    }


@pytest.mark.parametrize("name", VIEW_CASES)
def test_view(comfy: Comfy, view_files: dict[str, str], name: str) -> None:
    rec = load(name)
    query = dict(rec["request"].get("query", {}))
    for key, value in query.items():
        for old, new in view_files.items():
            value = value.replace(old, new)
        query[key] = value
    response = comfy.get("/view", params=query)
    check_response(rec["response"], response, view_files, what=f"{name} {query}")
