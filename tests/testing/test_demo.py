"""``python -m airflow_comfy.testing.demo``: success is the run's state, the end is a short summary.

One real demo run (a subprocess with its own Airflow home, against the stand-in it starts) of the
example that keeps server-side paths: it must exit 0, show those paths and their local copies, and
keep Airflow's INFO log and third-party deprecation warnings out of the way. The refusals and the
summary's wording are checked without running a DAG. The demo of the shipped first DAG from an
installed wheel is in tests/test_wheel.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_comfy.testing import demo
from airflow_comfy.testing.dags import DagRunResult

ROOT = Path(__file__).resolve().parents[2]


def _demo(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.pop("COMFYUI_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "airflow_comfy.testing.demo", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(300)
def test_a_dag_that_keeps_server_paths_succeeds_and_shows_them(tmp_path: Path) -> None:
    run = _demo(
        "--dags-folder", str(ROOT / "dags_examples"), "--dag", "comfyui_submit_then_sense", cwd=tmp_path
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    summary = run.stdout[run.stdout.index("=" * 72) :]
    assert "DAG comfyui_submit_then_sense: success" in summary
    assert "Output files on the ComfyUI server (1)" in summary
    [line] = [line for line in summary.splitlines() if line.startswith("  output/sensed/")]
    server_path, local = line.strip().split("  ->  ")
    assert Path(local).is_file() and local.endswith(server_path)
    assert Path(local).is_relative_to(tmp_path / ".airflow-demo")
    # Airflow's own INFO lines and the third-party deprecation warning stay out of the default output.
    assert "[info" not in output and "DeprecationWarning" not in output and "Traceback" not in output


def test_refusals_are_one_line_and_create_nothing(tmp_path: Path) -> None:
    missing = _demo("--dags-folder", "no-such-folder", cwd=tmp_path, timeout=60)
    assert missing.returncode == 2
    assert (
        missing.stderr.count("\n") == 1 and "--dags-folder no-such-folder: no such folder" in missing.stderr
    )
    no_dag = _demo("--dags-folder", str(ROOT / "dags_examples"), cwd=tmp_path, timeout=60)
    assert no_dag.returncode == 2 and "--dag is needed" in no_dag.stderr
    assert list(tmp_path.iterdir()) == []  # no .airflow-demo, no outputs folder


def test_without_the_testing_extra_the_demo_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = demo.importlib.util.find_spec
    monkeypatch.setattr(
        demo.importlib.util, "find_spec", lambda name: None if name == "aiohttp" else real(name)
    )
    with pytest.raises(demo.DemoError, match=r"pip install 'airflow-comfy\[testing\]'"):
        demo._check(demo._parse(["--url", ""]))
    assert demo._check(demo._parse(["--url", "http://gpu:8188"]))[1] == "comfyui_first_dag"


def _result(state: str, tasks: dict, returns: dict | None = None, xcoms: dict | None = None) -> DagRunResult:
    return DagRunResult("d", "manual__1", state, tasks, returns or {}, xcoms or {})


def test_summary_lists_downloads_and_how_to_open_them(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"png")
    result = _result("success", {("render", -1): "success"}, {("render", -1): [str(image), "missing.png"]})
    lines = demo.summary(result, home=tmp_path, standin_dir=None)
    assert "DAG d: success  (run manual__1)" in lines
    assert f"  {image}" in lines and not any("missing.png" in line for line in lines)
    assert any(line.endswith(f"open '{image}'") for line in lines)


def test_summary_of_a_real_server_points_at_the_view_urls(tmp_path: Path) -> None:
    record = {"server_path": "output/x_00001_.png", "view_url": "http://gpu:8188/view?filename=x_00001_.png"}
    result = _result(
        "success",
        {("submit", -1): "success", ("wait", -1): "success"},
        {("wait", -1): ["output/x_00001_.png"]},
        {("wait", -1): {"outputs": [record]}},
    )
    lines = demo.summary(result, home=tmp_path, standin_dir=None)
    assert f"  output/x_00001_.png  ->  {record['view_url']}" in lines


def test_summary_of_a_failed_run_says_so(tmp_path: Path) -> None:
    lines = demo.summary(_result("failed", {("render", -1): "failed"}), home=tmp_path, standin_dir=None)
    assert "  render                       failed" in lines
    assert any("did not succeed" in line and "--verbose" in line for line in lines)
