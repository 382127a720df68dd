"""A griffe extension for the docs build: Sphinx cross-reference roles become mkdocs autorefs links.

The package's docstrings are written in reST style (``:param x:``, ``:class:`~a.b.C```). mkdocstrings
parses the ``:param:`` fields itself; this extension rewrites the roles (``:class:``, ``:func:``,
``:meth:``, ``:mod:``, ``:data:``, ``:attr:``, ``:exc:``, ``:obj:``) into ``[`C`][a.b.C]`` links,
resolving short names (``:meth:`cancel_prompt```) in the scope of the documented object, else by a
unique name in the package. References to other packages (Airflow, requests...) render as code: the
build is offline, with no inventory to link them to. A name that resolves nowhere stays a link to the
name as written, so ``mkdocs build --strict`` fails on it instead of rendering dead text.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_PACKAGE = "airflow_comfy"
_EXTERNAL_ROOTS = {"airflow", "requests", "httpx", "websocket", "aiohttp", "PIL", "tenacity", "pendulum"}
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj):`(~?)([^`<>]+?)`")


def _index(pkg: griffe.Object, found: dict[str, list[str]], seen: set[str]) -> dict[str, list[str]]:
    """Short name -> paths of every object defined in the package (to resolve unimported names)."""
    if pkg.path in seen:
        return found
    seen.add(pkg.path)
    found.setdefault(pkg.name, []).append(pkg.path)
    for member in pkg.members.values():
        if not member.is_alias:
            _index(member, found, seen)  # type: ignore[arg-type]
    return found


def _resolve(obj: griffe.Object, name: str, index: dict[str, list[str]]) -> str | None:
    """The full path ``name`` refers to; ``None`` for objects outside this package (no link)."""
    if name.startswith(_PACKAGE + ".") or name == _PACKAGE:
        return name
    head, _, rest = name.partition(".")
    try:
        target = obj.resolve(head)
    except Exception:  # griffe.NameResolutionError, alias errors: try the package-wide index
        candidates = index.get(head, [])
        if len(candidates) != 1:
            return None if head in _EXTERNAL_ROOTS else name  # unknown: a link that strict flags
        target = candidates[0]
    if not target.startswith(_PACKAGE):
        return None  # e.g. an Airflow class: no offline inventory to link to
    return f"{target}.{rest}" if rest else target


def rewrite(obj: griffe.Object, text: str, index: dict[str, list[str]]) -> str:
    """``text`` with every Sphinx role turned into an autorefs link (resolved in ``obj``'s scope)."""

    def link(match: re.Match[str]) -> str:
        short, name = match.group(1), match.group(2).strip().removesuffix("()")
        target = _resolve(obj, name, index)
        shown = name.rsplit(".", 1)[-1] if short else name
        return f"`{shown}`" if target is None else f"[`{shown}`][{target}]"

    return _ROLE.sub(link, text)


class SphinxRolesToAutorefs(griffe.Extension):
    """Rewrites the docstrings of every object of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._walk(pkg, _index(pkg, {}, set()), set())

    def _walk(self, obj: griffe.Object, index: dict[str, list[str]], seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj, obj.docstring.value, index)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, index, seen)  # type: ignore[arg-type]
