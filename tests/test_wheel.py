"""The sdist and wheel are complete, and the wheel works in a fresh venv: import, package data,
provider, console script, and the demo of the README's first DAG.

Builds the sdist and, from it, the wheel with ``uv build`` (from a copy of the repository, tests
included, so their exclusion from the sdist is checked); both must carry LICENSE, the sdist no test
files, and the long description no relative link (PyPI cannot resolve them). Then creates a new venv
with ``uv venv``, installs the wheel with its ``testing`` extra and dependencies pinned to the
versions of the running environment (so uv's cache serves them and the result does not drift with
PyPI), and checks inside that venv. Skipped when no ``uv`` is available (neither the ``uv`` Python
package nor a ``uv`` executable on PATH).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _uv() -> str | None:
    try:
        import uv  # type: ignore[import-not-found]

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


UV = _uv()
pytestmark = pytest.mark.skipif(UV is None, reason="needs uv (pip install uv)")


def _run(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 60, cwd: Path | None = None
) -> str:
    result = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        check=False,
    )
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _constraints(path: Path) -> Path:
    """The running environment's versions (minus this package), so the fresh venv gets the same ones."""
    pins = sorted(
        {
            f"{dist.metadata['Name']}=={dist.version}"
            for dist in importlib.metadata.distributions()
            if dist.metadata["Name"] and dist.metadata["Name"].lower().replace("_", "-") != "airflow-comfy"
        }
    )
    path.write_text("\n".join(pins) + "\n")
    return path


RELATIVE_LINK = re.compile(r"\]\((?!https?://|#)([^)]*)\)")


@pytest.fixture(autouse=True)
def _own_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """uv and the builds it runs put lock files in the temp folder: this test's, not the system's /tmp."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))


def _build(tmp_path: Path) -> tuple[Path, Path]:
    """sdist and wheel, built from a copy of the sources (setuptools leaves build/ and *.egg-info behind)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "CHANGELOG.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("airflow_comfy", "docs", "dags_examples", "tests", "benchmarks"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    dist = tmp_path / "dist"
    _run(UV, "build", "--quiet", "--out-dir", dist, source, timeout=180)
    [sdist] = list(dist.glob("airflow_comfy-*.tar.gz"))
    [wheel] = list(dist.glob("airflow_comfy-*.whl"))
    return sdist, wheel


def _check_sdist(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
        top = names[0].split("/")[0]
        license_file = archive.extractfile(f"{top}/LICENSE")
        assert license_file is not None and license_file.read() == (ROOT / "LICENSE").read_bytes()
    assert not [name for name in names if "/tests/" in name or name.endswith("/tests")], names
    for needed in (
        "pyproject.toml",
        "README.md",
        "airflow_comfy/examples/dags/first_dag.py",
        "docs/mkdocs.yml",
    ):
        assert f"{top}/{needed}" in names, needed


def _check_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [info] = {name.split("/")[0] for name in names if name.split("/")[0].endswith(".dist-info")}
        assert archive.read(f"{info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
        metadata = archive.read(f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata
    description = metadata.split("\n\n", 1)[1]
    assert "A first DAG" in description
    assert not RELATIVE_LINK.findall(description), RELATIVE_LINK.findall(description)
    for needed in ("first_dag.py", "scale_blur_save.json", "txt2img.json"):
        assert any(name.endswith(needed) for name in names), needed
    assert not [name for name in names if name.startswith("tests/")]


def test_readme_links_resolve_on_pypi():
    """The README is the PyPI page: a relative link there leads nowhere."""
    assert not RELATIVE_LINK.findall((ROOT / "README.md").read_text())


@pytest.mark.timeout(600)
def test_wheel_installs_and_registers_the_provider(tmp_path: Path):
    assert UV is not None
    sdist, wheel = _build(tmp_path)
    import airflow_comfy

    assert wheel.name.startswith(f"airflow_comfy-{airflow_comfy.__version__}-")
    _check_sdist(sdist)
    _check_wheel(wheel)

    venv = tmp_path / "venv"
    _run(UV, "venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    _run(
        UV, "pip", "install", "--quiet", "--python", python,
        "--constraint", _constraints(tmp_path / "constraints.txt"), f"{wheel}[testing]",
        timeout=180,
    )  # fmt: skip

    work = tmp_path / "work"  # not the repo: its airflow_comfy/ must not shadow the installed one
    work.mkdir()
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TMPDIR": os.environ["TMPDIR"],
    }
    check = (
        "import importlib.resources as r, pathlib, airflow_comfy; "
        "p = pathlib.Path(airflow_comfy.__file__).parent; "
        "assert 'site-packages' in str(p), p; "
        "assert (p / 'py.typed').is_file(); "
        "assert (p / 'testing' / 'data' / 'object_info.json.gz').stat().st_size > 1000; "
        "from airflow_comfy.get_provider_info import get_provider_info; "
        "print(airflow_comfy.__version__, get_provider_info()['package-name'])"
    )
    assert _run(python, "-c", check, env=env, cwd=work).split() == [
        airflow_comfy.__version__,
        "airflow-comfy",
    ]

    providers = _run(
        python, "-m", "airflow", "providers", "list", "-o", "plain", env=env, cwd=work, timeout=90
    )
    assert "airflow-comfy" in providers, providers
    hooks = _run(python, "-m", "airflow", "providers", "hooks", "-o", "plain", env=env, cwd=work, timeout=90)
    assert "comfyui" in hooks, hooks

    assert "convert" in _run(venv / "bin" / "airflow-comfy", "--help", env=env, cwd=work)

    # The installed demo runs the README's first DAG, shipped in the wheel, against a stand-in...
    demo_env = {k: v for k, v in env.items() if k != "AIRFLOW_HOME"}
    out = _run(python, "-m", "airflow_comfy.testing.demo", env=demo_env, cwd=work, timeout=300)
    assert "DAG comfyui_first_dag: success" in out, out[-3000:]
    images = list((work / "comfyui-outputs").rglob("*.png"))
    assert len(images) == 1 and f"  {images[0]}" in out.splitlines(), out[-3000:]
    # ... and a DAGs folder that is not there (dags_examples/ is not in the wheel) is a one-line refusal.
    refused = subprocess.run(
        [python, "-m", "airflow_comfy.testing.demo", "--dags-folder", "dags_examples", "--dag", "x"],
        env=demo_env, cwd=tmp_path / "dist", capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "--dags-folder dags_examples: no such folder" in refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr
