"""The options of a batch: what the operator, its deferral cycles and ``run_batch`` pass to a run.

Invariant: everything here is plain data (JSON-safe apart from ``items`` given inline), checked
once by :meth:`BatchOptions.checked`, so that a wrong value fails the task before any request.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from airflow_comfy.batch.items import ItemSpec, ItemsSource


@dataclass(frozen=True)
class BatchOptions:
    """How to run a batch; the operator's parameters of the same names."""

    items: ItemsSource
    output_dir: str
    item_spec: ItemSpec = field(default_factory=ItemSpec)
    overrides: Mapping[str, Any] | None = None
    inputs: Mapping[str, str] | None = None
    input_subfolder: str = "airflow"
    validate: bool = True
    download: bool = True
    output_kinds: tuple[str, ...] | None = None
    max_in_flight: int = 2
    max_failed: int | float = 0
    resubmit_lost: bool = False
    cancel_on_kill: bool = True
    check_interval: float = 2.0
    unreachable_grace: float = 300.0
    progress_interval: float = 10.0
    manifest_sync_interval: float = 10.0

    def checked(self) -> BatchOptions:
        """These options, or ``ValueError`` naming the first wrong one."""
        if not self.output_dir:
            raise ValueError("output_dir is required: the manifest (and the downloads) are written there")
        if isinstance(self.items, Mapping) or not isinstance(self.items, str | os.PathLike | Sequence):
            raise ValueError(
                "items must be a list of objects or a .jsonl / .csv file (read twice: once to count and "
                f"check, once to run), not {type(self.items).__name__}"
            )
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {self.max_in_flight}")
        if isinstance(self.max_failed, bool) or self.max_failed < 0:
            raise ValueError(f"max_failed must be a count or a fraction below 1, got {self.max_failed!r}")
        for name in ("check_interval", "unreachable_grace", "progress_interval", "manifest_sync_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        return replace(self, output_dir=os.fspath(self.output_dir))


def make_options(
    items: Any,
    output_dir: str | os.PathLike[str],
    *,
    key_field: str | None = None,
    fields: Mapping[str, str] | None = None,
    input_fields: Mapping[str, str] | None = None,
    output_kinds: Iterable[str] | None = None,
    **rest: Any,
) -> BatchOptions:
    """:class:`BatchOptions` from the operator's flat parameters, checked."""
    spec = ItemSpec(key_field, dict(fields) if fields else None, dict(input_fields) if input_fields else None)
    kinds = tuple(output_kinds) if output_kinds else None
    return BatchOptions(items, os.fspath(output_dir), spec, output_kinds=kinds, **rest).checked()
