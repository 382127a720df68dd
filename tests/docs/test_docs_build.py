"""The documentation site builds with ``mkdocs build --strict``: a broken link, anchor or API reference fails.

The build runs in a subprocess (as a developer or CI would run it) into a temporary folder. The
reference pages are generated from the docstrings, so a docstring whose cross-reference names
nothing (``:class:`NoSuchThing```) fails this test too.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs", reason="needs the docs extra: pip install -e '.[docs]'")
pytest.importorskip("mkdocstrings")

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


@pytest.mark.timeout(150)
def test_docs_build_strict_without_warnings(tmp_path: Path):
    site = tmp_path / "site"
    result = _build(DOCS / "mkdocs.yml", site)
    log = result.stdout + result.stderr
    problems = [line for line in log.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert result.returncode == 0 and not problems, log[-4000:]
    # The reference really was generated from the docstrings, parameters included.
    operators = (site / "reference" / "operators" / "index.html").read_text(encoding="utf-8")
    for text in ("ComfyUIPromptOperator", "resubmit_if_lost", "ComfyUIPromptSensor", "cancel_on_kill"):
        assert text in operators, text
    hooks = (site / "reference" / "hooks" / "index.html").read_text(encoding="utf-8")
    assert "submit_prompt" in hooks and "ComfyUISettings" in hooks
    assert "0.1.0" in (site / "changelog" / "index.html").read_text(encoding="utf-8")
    for page in ("getting-started", "connection", "waiting", "workflows", "outputs", "standin", "scale"):
        assert (site / page / "index.html").is_file(), page


def test_every_public_module_is_in_the_reference():
    """Adding a module to the package without a ``::: module`` entry in docs/pages/reference fails."""
    import airflow_comfy

    referenced = set()
    for page in (DOCS / "pages" / "reference").glob("*.md"):
        referenced.update(re.findall(r"^::: ([\w.]+)", page.read_text(encoding="utf-8"), re.MULTILINE))
    modules = {"airflow_comfy"}
    existing = {"airflow_comfy"}
    for info in pkgutil.walk_packages(airflow_comfy.__path__, "airflow_comfy."):
        existing.add(info.name)
        if any(part.startswith("_") and part != "__main__" for part in info.name.split(".")):
            continue
        if info.ispkg and not getattr(importlib.import_module(info.name), "__all__", None):
            continue  # a package that only holds modules (hooks/, operators/...): its modules count
        modules.add(info.name)
    missing = sorted(modules - referenced)
    assert not missing, f"modules missing from docs/pages/reference/*.md: {missing}"
    unknown = sorted(name for name in referenced if name.startswith("airflow_comfy") and name not in existing)
    assert not unknown, f"reference pages name modules that do not exist: {unknown}"


@pytest.mark.timeout(150)
def test_a_broken_link_or_reference_fails_the_build(tmp_path: Path):
    """The strict settings really bite: a copy of the docs with one dead link and one dead reference."""
    copy = tmp_path / "docs"
    shutil.copytree(DOCS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "CHANGELOG.md", tmp_path / "CHANGELOG.md")
    (copy / "mkdocs.yml").write_text(
        (copy / "mkdocs.yml").read_text(encoding="utf-8").replace("paths: [..]", f"paths: [{ROOT}]"),
        encoding="utf-8",
    )
    index = copy / "pages" / "index.md"
    index.write_text(
        index.read_text(encoding="utf-8")
        + "\nSee [the old page](no-such-page.md) and [`Gone`][airflow_comfy.hooks.comfyui.NoSuchHook].\n",
        encoding="utf-8",
    )
    result = _build(copy / "mkdocs.yml", tmp_path / "site")
    log = result.stdout + result.stderr
    assert result.returncode != 0, log[-3000:]
    assert "no-such-page.md" in log
    assert "airflow_comfy.hooks.comfyui.NoSuchHook" in log
