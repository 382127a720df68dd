"""The wheel installs into a fresh venv and works there: import, package data, provider, console script.

Builds the wheel with ``uv build --wheel``, creates a new venv with ``uv venv``, installs the wheel
plus its dependencies pinned to the versions of the running environment (so uv's cache serves them
and the result does not drift with PyPI), then checks inside that venv. Skipped when no ``uv`` is
available (neither the ``uv`` Python package nor a ``uv`` executable on PATH).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
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


@pytest.mark.timeout(180)
def test_wheel_installs_and_registers_the_provider(tmp_path: Path):
    assert UV is not None
    # Build from a copy of the sources: setuptools leaves build/ and *.egg-info behind in the tree it builds.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "airflow_comfy", source / "airflow_comfy", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist = tmp_path / "dist"
    _run(UV, "build", "--wheel", "--quiet", "--out-dir", dist, source, timeout=120)
    wheels = list(dist.glob("airflow_comfy-*.whl"))
    assert len(wheels) == 1, wheels
    wheel = wheels[0]
    import airflow_comfy

    assert wheel.name.startswith(f"airflow_comfy-{airflow_comfy.__version__}-")

    venv = tmp_path / "venv"
    _run(UV, "venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    _run(
        UV, "pip", "install", "--quiet", "--python", python,
        "--constraint", _constraints(tmp_path / "constraints.txt"), wheel,
        timeout=120,
    )  # fmt: skip

    work = tmp_path / "work"  # not the repo: its airflow_comfy/ must not shadow the installed one
    work.mkdir()
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONDONTWRITEBYTECODE": "1",
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
