"""``airflow-comfy list`` and ``convert``/``validate`` of workflows saved on a server (comfyui://)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from airflow_comfy.cli import main
from airflow_comfy.testing.userdata import save_userdata

DATA = Path(__file__).parent / "workflows" / "data"


def test_list_shows_saved_workflows(standin, capsys):
    assert main(["list", "--url", standin.url]) == 0
    assert capsys.readouterr().out == ""  # nothing saved yet: the folder does not even exist
    for name in ("portraits/headshot.json", "landscape.json"):
        save_userdata(standin.base_dir, f"workflows/{name}", (DATA / "ui" / "default.json").read_bytes())
    assert main(["list", "--url", standin.url]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "comfyui://workflows/landscape.json",
        "comfyui://workflows/portraits/headshot.json",
    ]
    assert "2 saved workflows" in captured.err


def test_convert_and_validate_a_saved_workflow(standin, capsys):
    raw = (DATA / "ui" / "default.json").read_bytes()
    save_userdata(standin.base_dir, "workflows/portraits/headshot.json", raw)
    source = "comfyui://workflows/portraits/headshot.json"
    assert main(["convert", source, "--url", standin.url]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["3"]["class_type"] == "KSampler"
    assert hashlib.sha256(raw).hexdigest() in captured.err
    assert main(["validate", source, "--url", standin.url, "--override", "9.filename_prefix=x"]) == 1
    assert "ckpt_name" in capsys.readouterr().out  # the stand-in has no checkpoint: a model error only


def test_missing_saved_workflow_names_close_ones(standin, capsys):
    save_userdata(standin.base_dir, "workflows/portraits/headshot.json", b"{}")
    assert main(["convert", "comfyui://workflows/portraits/headshots.json", "--url", standin.url]) == 1
    assert "did you mean: workflows/portraits/headshot.json" in capsys.readouterr().err


def test_saved_workflow_needs_a_url(capsys):
    assert main(["convert", "comfyui://workflows/a.json"]) == 1
    assert "add --url URL" in capsys.readouterr().err


def test_list_does_not_import_airflow(standin):
    code = (
        "import sys\nfrom airflow_comfy.cli import main\n"
        f"assert main(['list', '--url', {standin.url!r}]) == 0\n"
        "sys.exit(1 if any(m == 'airflow' or m.startswith('airflow.') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False, capture_output=True).returncode == 0
