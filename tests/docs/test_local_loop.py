"""docs/pages/local-loop.md runs as written: its ```bash blocks, in order, in one shell.

The page's commands run with ``set -euo pipefail`` in a throwaway folder, with a fresh
``AIRFLOW_HOME`` (the page sets it), ``PATH`` starting with this interpreter's ``bin/`` (``python``,
``airflow``, ``airflow-comfy``) and the stand-in on a free 127.0.0.1 port instead of 8188. The shell
runs in its own process group, which is killed afterwards, so a failing step cannot leave the
stand-in behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "pages" / "local-loop.md"
BASH = re.compile(r"^```bash[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _script(port: int) -> str:
    blocks = BASH.findall(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) >= 7, "the page lost its steps"
    body = "\n".join(blocks)
    assert body.count("8188") >= 2 and "127.0.0.1" in body
    return "set -euo pipefail\n" + body.replace("8188", str(port))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_page_covers_the_whole_loop():
    script = _script(8188)
    for step in (
        "python -m airflow_comfy.testing --port",
        "AIRFLOW_CONN_COMFYUI_DEFAULT",
        "airflow db migrate",
        "airflow dags test comfyui_first_dag",
        "ls comfyui-outputs/",
        'kill "$STANDIN_PID"',
    ):
        assert step in script, step


@pytest.mark.timeout(600)
def test_the_local_loop_runs_as_written(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "COMFYUI"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(tmp_path)
    process = subprocess.Popen(
        ["bash", "-c", _script(_free_port())],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=540)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the stand-in, if a step failed before `kill`
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    folder = tmp_path / "comfy-local"
    logs = "".join(
        f"\n--- {name}\n" + (folder / name).read_text()[-3000:]
        for name in ("standin.log", "dags-test.log")
        if (folder / name).is_file()
    )
    assert process.returncode == 0, output[-4000:] + logs
    assert "OK: 4 nodes, outputs 4" in output
    assert " state=success" in output
    [image] = (folder / "comfyui-outputs").glob("*/first/render_*.png")
    assert image.stat().st_size > 0
    assert (folder / "comfyui" / "output" / "first" / image.name).is_file()
