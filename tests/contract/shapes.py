"""Helpers for the ComfyUI contract tests: recorded transcripts and the comparison of body *shapes*.

A shape comparison looks at keys, value types and list structure, never at volatile values (ids,
``number``, timestamps, ``sid``, colours, output file names, temp names, hashes, traceback paths,
exception messages, ``argv``). A few keys whose values are part of the contract (error ``type``s,
``class_type``, ``status_str``...) are compared by value too, see ``STABLE_KEYS``.
"""

from __future__ import annotations

import json
import random
import struct
import uuid
import zlib
from collections.abc import Iterable
from typing import Any

from contract_data import CONTRACT_DIR

# Keys whose scalar (or list-of-scalar) values are part of the contract and compared literally.
STABLE_KEYS = frozenset(
    {
        "type",
        "class_type",
        "dependent_outputs",
        "status_str",
        "completed",
        "node_type",
        "exception_type",
        "input_name",
        "subfolder",
        "node_id",
        "display_node",
        "real_node_id",
        "parent_node",
        "display_node_id",
        "parent_node_id",
        "state",
        "name",
        "output_node",
        "category",
        "output",
        "output_name",
        "output_is_list",
        "python_module",
    }
)


def load(name: str) -> dict[str, Any]:
    """One recorded transcript (``name`` without .json)."""
    return json.loads((CONTRACT_DIR / f"{name}.json").read_text())


def workflows() -> dict[str, dict[str, Any]]:
    return load("workflows")["workflows"]


def token() -> str:
    """A short unique token for prompt ids, client ids, prefixes and file names."""
    return uuid.uuid4().hex[:10]


# --------------------------------------------------------------------------------------------------
# shapes


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def signature(value: Any) -> Any:
    """A hashable description of a value's shape (used to tell homogeneous lists from tuples)."""
    if isinstance(value, dict):
        return ("object", tuple(sorted((k, signature(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("list", tuple(signature(v) for v in value))
    return _kind(value)


def _is_scalar_or_scalar_list(value: Any) -> bool:
    if isinstance(value, list):
        return all(not isinstance(v, dict | list) for v in value)
    return not isinstance(value, dict)


def shape_diff(
    expected: Any,
    actual: Any,
    path: str = "$",
    stable: frozenset[str] = STABLE_KEYS,
    key: str | None = None,
) -> list[str]:
    """Differences in shape between a recorded value and a live one (empty list: same shape).

    * objects: same key set, recursively;
    * lists: an empty recorded list accepts any list; a recorded list whose items all have the same
      shape is *homogeneous* (every actual item must have that shape, the length is a value); any
      other list is a tuple (same length, compared position by position);
    * scalars: same JSON type (null, bool, int, float, string);
    * under a key in ``stable`` a scalar or a list of scalars must also be equal.
    """
    diffs: list[str] = []
    if key is not None and key in stable and _is_scalar_or_scalar_list(expected):
        if expected != actual:
            diffs.append(f"{path}: expected value {expected!r}, got {actual!r}")
        return diffs
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected object, got {_kind(actual)} {_short(actual)}"]
        missing = [k for k in expected if k not in actual]
        extra = [k for k in actual if k not in expected]
        if missing:
            diffs.append(f"{path}: missing keys {missing}")
        if extra:
            diffs.append(f"{path}: unexpected keys {extra}")
        for k in expected:
            if k in actual:
                diffs += shape_diff(expected[k], actual[k], f"{path}.{k}", stable, k)
        return diffs
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path}: expected list, got {_kind(actual)} {_short(actual)}"]
        if not expected:
            return diffs
        signatures = {signature(v) for v in expected}
        if len(signatures) == 1:
            for i, item in enumerate(actual):
                diffs += shape_diff(expected[0], item, f"{path}[{i}]", stable)
            return diffs
        if len(expected) != len(actual):
            return [f"{path}: expected a {len(expected)}-tuple, got {len(actual)} items {_short(actual)}"]
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            diffs += shape_diff(e, a, f"{path}[{i}]", stable)
        return diffs
    if _kind(expected) != _kind(actual):
        diffs.append(f"{path}: expected {_kind(expected)}, got {_kind(actual)} {_short(actual)}")
    return diffs


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def assert_shape(
    expected: Any, actual: Any, what: str = "body", stable: frozenset[str] = STABLE_KEYS
) -> None:
    diffs = shape_diff(expected, actual, stable=stable)
    assert not diffs, f"{what} differs from the recorded shape:\n  " + "\n  ".join(diffs[:40])


def rebind(value: Any, mapping: dict[str, str]) -> Any:
    """Replace recorded ids (dict keys and string values) by the ones of this run."""
    if isinstance(value, dict):
        return {mapping.get(k, k): rebind(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [rebind(v, mapping) for v in value]
    if isinstance(value, str):
        return mapping.get(value, value)
    return value


def collapse(types: Iterable[str]) -> list[str]:
    """Collapse consecutive repeats: a a b a -> a b a."""
    out: list[str] = []
    for t in types:
        if not out or out[-1] != t:
            out.append(t)
    return out


def is_subsequence(needle: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needle)


def media_type(headers: Any) -> str | None:
    value = headers.get("Content-Type")
    return value.split(";")[0].strip() if value else None


# --------------------------------------------------------------------------------------------------
# HTTP


def tiny_png(seed: int | None = None, size: int = 4) -> bytes:
    """A valid RGB PNG whose pixels (and so bytes) depend on ``seed``."""
    rnd = random.Random(seed)
    rows = b"".join(b"\x00" + bytes(rnd.randrange(256) for _ in range(size * 3)) for _ in range(size))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
