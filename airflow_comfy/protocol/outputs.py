"""Output files of a finished prompt: parsing them from history and placing them safely on disk.

ComfyUI reports outputs per node as ``{"images": [{"filename", "subfolder", "type"}], ...}``
(also ``gifs``, ``audio``, ``video``, ``3d``...; ``animated: [true]`` marks an animated image, i.e. a
video) and non-file UI values such as ``{"text": ["..."]}``. This module turns that into
:class:`OutputRef` records and computes where a download may be written.

Invariant: :func:`safe_local_path` only ever returns a path inside the destination folder it is
given, whatever ``subfolder`` or ``filename`` the server sent (``..``, absolute paths, drive letters,
NUL bytes and over-long names are neutralised, never trusted).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_MAX_NAME = 200
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f<>:\"|?*\\]")
_COMPONENT = re.compile(r"[\\/]+")


@dataclass(frozen=True)
class OutputRef:
    """One output file as ComfyUI names it (``type``/``subfolder``/``filename``) and which node made it."""

    node_id: str
    kind: str
    filename: str
    subfolder: str = ""
    type: str = "output"

    @property
    def server_path(self) -> str:
        """``<type>/<subfolder>/<filename>``: where the file lies under the server's base directory.

        Always relative and without ``..``: a leading ``/`` or a ``..`` component sent by a broken or
        hostile server is dropped, so a consumer joining it to a base directory stays inside it.
        """
        texts = (self.type, self.subfolder, self.filename)
        parts = (p for text in texts for p in _COMPONENT.split(text or ""))
        return "/".join(p for p in parts if p not in ("", ".", ".."))

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def refs_from_outputs(outputs: Mapping[str, Any]) -> list[OutputRef]:
    """Every file record in a history entry's ``outputs`` (or an ``executed`` event's ``output``).

    Node order follows the server's dict order; within a node, the order of its lists. A list of
    ``images`` flagged ``animated: [true, ...]`` is reported with kind ``video``.
    """
    refs: list[OutputRef] = []
    for node_id, ui in (outputs or {}).items():
        if not isinstance(ui, Mapping):
            continue
        animated = ui.get("animated")
        for kind, items in ui.items():
            if not isinstance(items, list):
                continue
            for index, item in enumerate(items):
                if not (isinstance(item, Mapping) and isinstance(item.get("filename"), str)):
                    continue
                effective_kind = kind
                if kind == "images" and isinstance(animated, list) and index < len(animated):
                    effective_kind = "video" if animated[index] else kind
                refs.append(
                    OutputRef(
                        node_id=str(node_id),
                        kind=effective_kind,
                        filename=item["filename"],
                        subfolder=str(item.get("subfolder") or ""),
                        type=str(item.get("type") or "output"),
                    )
                )
    return refs


def text_from_outputs(outputs: Mapping[str, Any]) -> dict[str, list[str]]:
    """Non-file ``text`` UI outputs per node (PreviewAny, ShowText...)."""
    found: dict[str, list[str]] = {}
    for node_id, ui in (outputs or {}).items():
        if isinstance(ui, Mapping) and isinstance(ui.get("text"), list):
            found[str(node_id)] = [str(t) for t in ui["text"]]
    return found


def _clean_component(part: str) -> str:
    part = _UNSAFE_CHARS.sub("_", part).strip().strip(".")
    if not part:
        return ""
    # File systems limit a name to 255 *bytes*: measure UTF-8 bytes, not characters.
    if len(part.encode("utf-8")) > _MAX_NAME:
        digest = hashlib.sha256(part.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        stem, dot, ext = part.rpartition(".")
        ext = ext if dot and len(ext.encode("utf-8")) <= 16 else ""
        head = _truncate_utf8(stem if ext else part, _MAX_NAME - 30)
        part = head + "-" + digest + ("." + ext if ext else "")
    return part


def _truncate_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` that fits in ``max_bytes`` of UTF-8 (never splits a character)."""
    return text.encode("utf-8", "ignore")[:max_bytes].decode("utf-8", "ignore")


def safe_relative_parts(subfolder: str, filename: str) -> list[str]:
    """Path components for ``subfolder/filename`` with every escaping trick removed.

    Both ``/`` and ``\\`` separate components; ``.``/``..``/empty components are dropped; the file
    name keeps only its last component and is never empty.
    """
    parts: list[str] = []
    for raw in re.split(r"[\\/]+", subfolder or ""):
        cleaned = _clean_component(raw)
        if cleaned:
            parts.append(cleaned)
    name = _clean_component(re.split(r"[\\/]+", filename or "")[-1]) or "output"
    parts.append(name)
    return parts


def safe_local_path(dest_dir: str | Path, subfolder: str, filename: str) -> Path:
    """Where to write ``subfolder/filename`` under ``dest_dir``; always inside ``dest_dir``."""
    root = Path(dest_dir).resolve()
    candidate = root.joinpath(*safe_relative_parts(subfolder, filename)).resolve()
    if candidate != root and root not in candidate.parents:
        # Only reachable through a symlink planted inside dest_dir: refuse rather than follow it.
        raise ValueError(f"refusing to write {filename!r} outside {root}")
    return candidate


def unique_refs(refs: Iterable[OutputRef]) -> list[OutputRef]:
    """``refs`` without repeats (a cached output can be reported twice), order kept."""
    seen: set[tuple[str, str, str]] = set()
    out: list[OutputRef] = []
    for ref in refs:
        key = (ref.type, ref.subfolder, ref.filename)
        if key not in seen:
            seen.add(key)
            out.append(ref)
    return out
