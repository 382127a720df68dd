"""What a batch does with the statuses it reads: record successes and failures, move or retry prompts.

:class:`Outcomes` takes each status read of a prompt in flight (:meth:`Outcomes.classify`) and applies
the ledger's rules (:mod:`airflow_comfy.batch.ledger`): a success is queued for recording (its
downloads happen after the freed slot was filled, :meth:`Outcomes.record_ready`), a failure is
recorded at once, a lost prompt goes back to the queue or fails, and the prompts of a server gone for
good move elsewhere (:meth:`Outcomes.failover`).

Invariants: an item gets exactly one manifest line in a try, written after its outputs were fetched
(a success whose outputs cannot be fetched is a failure that says so); after a kill, a prompt found
absent or interrupted is left alone (it may be this batch's own cancel: the next try decides).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from airflow_comfy.batch.items import BatchItem, ItemError
from airflow_comfy.batch.ledger import InFlight, Ledger
from airflow_comfy.batch.manifest import Manifest
from airflow_comfy.batch.records import manifest_line, output_paths
from airflow_comfy.exceptions import ComfyUIError
from airflow_comfy.protocol import errors
from airflow_comfy.protocol.states import PromptState, PromptStatus

if TYPE_CHECKING:
    from airflow_comfy.batch.options import BatchOptions
    from airflow_comfy.hooks.comfyui import ComfyUIHook


class Outcomes:
    """Statuses in, manifest lines and ledger changes out (see the module docstring)."""

    def __init__(
        self,
        hook: ComfyUIHook,
        ledger: Ledger,
        manifest: Manifest,
        options: BatchOptions,
        log: Any,
        try_number: int,
        stop_signal: threading.Event,
    ) -> None:
        self.hook, self.ledger, self.manifest, self.options, self.log = hook, ledger, manifest, options, log
        self.try_number, self.stop_signal = try_number, stop_signal
        self.ready: list[tuple[InFlight, PromptStatus]] = []

    def classify(self, entry: InFlight, status: PromptStatus) -> None:
        state = status.state
        if self.stop_signal.is_set() and state in (PromptState.NOT_FOUND, PromptState.INTERRUPTED):
            return  # maybe this batch's own cancel (kill): the next try decides
        if state is PromptState.RUNNING:
            entry.started = True
        elif state is PromptState.SUCCESS:
            self.ledger.in_flight.pop(entry.prompt_id)
            self.ready.append((entry, status))
        elif state is PromptState.NOT_FOUND:
            why = self.ledger.lost(
                entry.prompt_id, reason=f"prompt {entry.prompt_id} was lost by {entry.server}"
            )
            if why is not None:
                self.fail(entry.item, why, entry)
            elif not entry.resumed:
                self.log.warning(
                    "Prompt %s of %s was lost by %s; submitting it once more",
                    entry.prompt_id,
                    entry.item.describe(),
                    entry.server,
                )
        elif state is PromptState.INTERRUPTED and entry.resumed:
            self.ledger.requeue(entry.prompt_id)  # this batch's own cancel in an earlier try
        elif state.is_terminal:
            error = errors.error_for_status(status)
            self.fail(entry.item, str(error or state.value), entry)

    def failover(self, now: float) -> None:
        for server in self.ledger.gone(now):
            for entry in [e for e in self.ledger.in_flight.values() if e.server == server]:
                if not entry.started:
                    self.log.warning("%s moves off %s (unreachable)", entry.item.describe(), server)
                    self.ledger.requeue(entry.prompt_id)
                    continue
                why = self.ledger.lost(entry.prompt_id, reason=f"{server} went away while it ran")
                if why is not None:
                    self.fail(entry.item, why, entry)

    def record_ready(self) -> None:
        while self.ready:
            entry, status = self.ready.pop(0)
            self.ledger.add(entry)  # counted as in flight until its line is written
            try:
                paths = output_paths(self.hook.client(entry.server), entry, status, self.options)
            except ComfyUIError as exc:
                self.fail(entry.item, f"its outputs could not be fetched: {exc}", entry)
                continue
            self.ledger.success(entry.prompt_id)
            self.manifest.finished(
                manifest_line(entry, "succeeded", status, outputs=paths, try_number=self.try_number)
            )

    def fail(self, item: BatchItem, message: str, entry: InFlight | None) -> None:
        self.ledger.failure(item, message, entry.prompt_id if entry else None)
        self.log.warning("%s failed: %s", item.describe(), message)
        self.manifest.finished(
            manifest_line(
                entry or InFlight(item, "", "", 0.0),  # never queued
                "failed",
                error=message,
                try_number=self.try_number,
            )
        )

    def fail_unread(self, error: ItemError) -> None:
        item = BatchItem(error.key, error.position, where=error.where)
        self.fail(item, error.message, None)

    def cancel_all(self, why: str) -> None:
        """Cancel every prompt of this batch in flight; a failed cancel is logged, not raised."""
        for entry in list(self.ledger.in_flight.values()):
            try:
                done = self.hook.client(entry.server).cancel_prompt(entry.prompt_id)
                self.log.warning(
                    "Prompt %s of %s: %s because %s", entry.prompt_id, entry.item.describe(), done, why
                )
            except Exception as exc:  # a failed cancel must not hide the original error
                self.log.warning("Could not cancel prompt %s (%s): %s", entry.prompt_id, why, exc)
