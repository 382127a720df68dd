"""One batch of one task instance: resume, submit, track, record — driving the ledger with real servers.

:class:`BatchRun` is shared by :class:`~airflow_comfy.operators.batch.ComfyUIBatchOperator` (blocking
and deferrable) and :func:`~airflow_comfy.taskflow.run_batch`. Its rules of scheduling live in
:mod:`airflow_comfy.batch.ledger`, the files in :mod:`airflow_comfy.batch.manifest`.

A round (:meth:`BatchRun.step`): read the status of every prompt in flight (per server one
``/queue`` read, ``/history/<id>`` only for those that left it: ``flows.read_statuses``), hand the
outcomes to the ledger, fill the free slots with new items (journal line, then POST), then record
the finished items (downloads, manifest lines). Rounds are started by the servers' WebSocket
messages (one socket per server; without it, every ``check_interval`` seconds).

Resuming (a retry, or the next deferral cycle) is :mod:`airflow_comfy.batch.resume`. When the
journal may be behind (an object-storage manifest after a killed try), fresh items are first looked
for on every server, until ``window`` (servers x ``max_in_flight``) of them in a row are found
nowhere: items are posted one at a time in order, so the posted ones form a prefix of the items.

Invariants: no prompt id is posted twice by one try, and never when an earlier try's prompt for it
is queued, running or finished; stopping cancels only this batch's prompts; every wait is bounded
(``check_interval``), and a batch whose servers are all gone for ``unreachable_grace`` fails.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from airflow_comfy.batch.items import BatchItem, ItemError, read_items
from airflow_comfy.batch.ledger import InFlight, Ledger
from airflow_comfy.batch.manifest import Manifest, ManifestState
from airflow_comfy.batch.outcomes import Outcomes
from airflow_comfy.batch.prepare import ItemPreparer, batch_digest, blames_item, item_problem, item_prompt_id
from airflow_comfy.batch.records import BatchSummary, iso
from airflow_comfy.batch.resume import take_over
from airflow_comfy.batch.signals import ServerSignals
from airflow_comfy.exceptions import (
    ComfyUIConnectionError,
    ComfyUIError,
    ComfyUIValidationError,
    ComfyUIWorkflowError,
)
from airflow_comfy.hooks import pool
from airflow_comfy.protocol import flows, urls
from airflow_comfy.protocol.ids import new_client_id
from airflow_comfy.protocol.states import PromptStatus

if TYPE_CHECKING:
    from airflow_comfy.batch.options import BatchOptions
    from airflow_comfy.hooks.comfyui import ComfyUIHook

#: Seconds between surveys of the servers' queues (and health) while all of them answer.
SURVEY_EVERY = 30.0


class BatchRun:
    """The batch of one task instance (see the module docstring)."""

    def __init__(
        self,
        hook: ComfyUIHook,
        task: tuple[Any, ...],
        log: Any,
        options: BatchOptions,
        source: dict[str, Any],
        identity: dict[str, Any],
        *,
        try_number: int = 1,
        stop: threading.Event | None = None,
    ) -> None:
        self.hook, self.task, self.log, self.options = hook, task, log, options
        self.identity, self.try_number = batch_digest(identity), try_number
        self.retry = try_number > 1
        self.stop_signal = stop or threading.Event()
        self.manifest = Manifest(options.output_dir, sync_interval=options.manifest_sync_interval)
        self.preparer = ItemPreparer(
            source,
            options.overrides,
            options.inputs,
            validate=options.validate,
            input_subfolder=options.input_subfolder,
            log=log,
        )
        self.client_id = new_client_id()
        self.ledger = Ledger(
            [], options.max_in_flight, options.max_failed, options.unreachable_grace, options.resubmit_lost
        )
        self.state = ManifestState({}, {})
        self.signals: ServerSignals | None = None
        self.outcomes = Outcomes(hook, self.ledger, self.manifest, options, log, try_number, self.stop_signal)
        self._items: Iterator[BatchItem | ItemError] | None = None
        self._exhausted = False
        self._unsure = 0  # fresh items still to look for on the servers (journal maybe behind)
        self._queues: dict[str, int] = {}
        self._surveyed = self._logged = 0.0
        self._killed = False

    # --- starting -----------------------------------------------------------------------------------

    def start(self, *, continuing: bool = False) -> None:
        """Choose the servers, prepare the workflow on one (a rejection fails here), read what
        earlier tries left, and take over their prompts.

        ``continuing``: this is the next cycle of a deferred batch in the same try (the journal was
        synced before deferring; its prompts are this try's own, under the lost rule).
        """
        self._survey(first=True)
        first = next((s for s in self.ledger.servers if s not in self.ledger.down_since), None)
        if first is None:
            raise ComfyUIConnectionError(
                f"No ComfyUI server of connection {self.hook.comfyui_conn_id!r} answers; "
                "not starting the batch"
            )
        self.preparer.base(self.hook.client(first))
        self.state = self.manifest.load_state()
        self.ledger.total = take_over(
            read_items(self.options.items, self.options.item_spec),
            self.state,
            self.ledger,
            lambda item: item_prompt_id(self.task, self.identity, item),
            default_server=first,
            resumed=not continuing,
            where=self.manifest.path,
            try_number=self.try_number,
        )
        if self.retry and not continuing and not self.manifest.exact:
            self._unsure = len(self.ledger.servers) * self.options.max_in_flight
        self._items = read_items(self.options.items, self.options.item_spec)
        self.ledger.started_at = time.monotonic()
        self.signals = ServerSignals(self.hook, self.ledger.servers, self.client_id, self.log)

    def _survey(self, *, first: bool = False) -> None:
        """The pool's servers (capability routing) and their queue lengths: every :data:`SURVEY_EVERY`
        seconds, or every ``check_interval`` while a server is down with nothing of ours to read."""
        now = time.monotonic()
        idle_down = any(self.ledger.running_on(s) == 0 for s in self.ledger.down_since)
        every = self.options.check_interval if idle_down else SURVEY_EVERY
        if not first and now - self._surveyed < every:
            return
        self._surveyed = now
        required = (
            pool.required_node_types(self.preparer.source) if self.hook.capability_routing else frozenset()
        )
        states = pool.survey(self.hook.settings, required)
        if first:
            usable = [s.url for s in states if not s.missing_nodes]
            if not usable:
                reasons = "; ".join(f"{s.url}: {s.problem}" for s in states)
                raise ComfyUIWorkflowError(
                    f"No server of connection {self.hook.comfyui_conn_id!r} can run this workflow: {reasons}"
                )
            self.ledger.servers = usable
        for state in states:
            if state.url not in self.ledger.servers:
                continue
            if state.eligible:
                self._queues[state.url] = state.queue_remaining or 0
                self.ledger.server_answered(state.url)
            elif state.url not in self.ledger.down_since:  # logged when it goes down, not at every survey
                self.ledger.server_failed(state.url, now)
                self.log.warning("ComfyUI server %s: %s", state.url, state.problem)

    # --- rounds -------------------------------------------------------------------------------------

    def step(self) -> None:
        """One round: track, fill, record (module docstring)."""
        self._survey()
        self._track()
        self.outcomes.failover(time.monotonic())
        self._fill()
        self.outcomes.record_ready()
        self._progress()

    def complete(self) -> bool:
        ledger = self.ledger
        return self._exhausted and not ledger.in_flight and not ledger.retry and not self.outcomes.ready

    def run(self) -> BatchSummary:
        """Run to the end in this process (the blocking form)."""
        try:
            self.start()
            while True:
                self.step()
                if self.complete() or self._stopped_by_budget():
                    break
                self._raise_if_stalled()
                if self.stop_signal.is_set():
                    raise ComfyUIError("The batch was stopped")
                assert self.signals is not None
                self.signals.wait(self.options.check_interval)
        except BaseException:
            self.kill("the task stopped")
            self.close()
            raise
        return self.finish()

    def advance(self) -> dict[str, list[str]]:
        """Work until this process would only wait; the prompts to wait for, by server (deferral)."""
        while True:
            self.step()
            if self.complete() or self._stopped_by_budget():
                return {}
            if self.ledger.in_flight:
                by_server: dict[str, list[str]] = {}
                for entry in self.ledger.in_flight.values():
                    by_server.setdefault(entry.server, []).append(entry.prompt_id)
                return by_server
            self._raise_if_stalled()
            assert self.signals is not None
            self.signals.wait(self.options.check_interval)

    def _stopped_by_budget(self) -> bool:
        return self.ledger.over_budget() and not self.ledger.in_flight and not self.outcomes.ready

    def _raise_if_stalled(self) -> None:
        if self.ledger.stalled(time.monotonic()):
            raise ComfyUIConnectionError(
                f"Every ComfyUI server of connection {self.hook.comfyui_conn_id!r} has been unreachable for "
                f"more than {self.options.unreachable_grace:g} s; the batch stops (a retry resumes it)"
            )

    # --- tracking -----------------------------------------------------------------------------------

    def _track(self) -> None:
        by_server: dict[str, list[str]] = {}
        for entry in self.ledger.in_flight.values():
            by_server.setdefault(entry.server, []).append(entry.prompt_id)
        now = time.monotonic()
        for server, prompt_ids in by_server.items():
            client = self.hook.client(server)
            try:
                statuses = client.transport.run(flows.read_statuses(prompt_ids, retry=False))
            except ComfyUIError as exc:
                if server not in self.ledger.down_since:
                    self.log.warning("Cannot read the queue of %s: %s", server, exc)
                self.ledger.server_failed(server, now)
                continue
            self.ledger.server_answered(server)
            for prompt_id, status in statuses.items():
                if isinstance(status, PromptStatus):
                    self.outcomes.classify(self.ledger.in_flight[prompt_id], status)

    # --- filling ------------------------------------------------------------------------------------

    def _fill(self) -> None:
        while not self.stop_signal.is_set() and not self.ledger.over_budget():
            server = self.ledger.choose(self._queues)
            if server is None:
                return
            taken = self._next_item()
            if taken is None:
                return
            item, attempt = taken
            self._submit(item, attempt, server)

    def _next_item(self) -> tuple[BatchItem, int] | None:
        if self.ledger.retry:
            return self.ledger.retry.popleft()
        while self._items is not None and not self._exhausted:
            raw = next(self._items, None)
            if raw is None:
                self._exhausted = True
                return None
            key = raw.key
            if key in self.state.finished:
                continue
            if isinstance(raw, ItemError):
                self.outcomes.fail_unread(raw)
                continue
            if key in self.state.submitted:
                continue  # taken over in start()
            if self._unsure and self._found_elsewhere(raw):
                continue
            return raw, 1
        return None

    def _found_elsewhere(self, item: BatchItem) -> bool:
        prompt_id = item_prompt_id(self.task, self.identity, item)
        client, status = self.hook.locate(prompt_id, strict=True)
        if client is None:
            self._unsure -= 1
            return False
        self._unsure = len(self.ledger.servers) * self.options.max_in_flight
        entry = InFlight(item, prompt_id, client.base_url, time.time(), resumed=True)
        self.ledger.add(entry)
        self.outcomes.classify(entry, status)
        return True

    def _submit(self, item: BatchItem, attempt: int, server: str) -> None:
        client = self.hook.client(server)
        prompt_id = item_prompt_id(self.task, self.identity, item)
        try:
            self.preparer.base(client)
        except (ComfyUIValidationError, ComfyUIWorkflowError) as exc:
            self.ledger.retry.appendleft((item, attempt))
            self._drop_server(server, exc)
            return
        except ComfyUIError:
            pass  # unreachable: handled with the item below
        try:
            workflow = self.preparer.for_item(client, item)
        except (ComfyUIError, OSError) as exc:
            problem = item_problem(exc)
            if problem is None:
                self.ledger.server_failed(server, time.monotonic())
                self.ledger.retry.appendleft((item, attempt))
                self.log.warning("Cannot prepare %s on %s: %s", item.describe(), server, exc)
                return
            self.outcomes.fail(item, problem, None)
            return
        entry = InFlight(item, prompt_id, server, time.time(), attempt=attempt)
        self.manifest.submitted(
            {
                "key": item.key,
                "position": item.position,
                "prompt_id": prompt_id,
                "server": urls.redact_url(server),
                "queued_at": iso(entry.queued_at),
                "attempt": attempt,
            }
        )
        self.ledger.add(entry)
        try:
            client.submit_prompt(workflow, client_id=self.client_id, prompt_id=prompt_id)
        except ComfyUIValidationError as exc:
            if blames_item(self.preparer.base(client), workflow, exc):
                self.outcomes.fail(item, str(exc), entry)
            else:  # the workflow does not fit this server (ComfyUI's own checks, e.g. a missing file)
                self.ledger.requeue(prompt_id, front=True)
                self._drop_server(server, exc)
        except ComfyUIError as exc:
            problem = item_problem(exc)
            if problem is not None:
                self.outcomes.fail(item, problem, entry)
            elif exc.never_sent:  # not posted: it may go elsewhere
                self.ledger.requeue(prompt_id, front=True)
                self.ledger.server_failed(server, time.monotonic())
            else:  # it may have arrived: tracking tells (found, or confirmed absent → lost rule)
                self.ledger.server_failed(server, time.monotonic())
                entry.resumed = True

    def _drop_server(self, server: str, exc: ComfyUIError) -> None:
        """``server`` cannot run the batch's workflow (a model or node missing there): not used again;
        raises when it was the last one."""
        others = [s for s in self.ledger.servers if s != server]
        if not others:
            raise exc
        self.log.warning("%s cannot run this workflow, not used by this batch: %s", server, exc)
        self.ledger.servers = others

    # --- recording ----------------------------------------------------------------------------------

    def _progress(self) -> None:
        now = time.monotonic()
        if now - self._logged < self.options.progress_interval:
            return
        self._logged = now
        total = self.ledger.total
        finished = self.ledger.succeeded + self.ledger.failed + len(self.ledger.in_flight)
        waiting = None if total is None else max(total - finished, 0)
        self.log.info("Batch: %s", self.ledger.progress_line(now, waiting))

    # --- ending -------------------------------------------------------------------------------------

    def kill(self, why: str) -> None:
        """Stop, and cancel this batch's prompts in flight (when ``cancel_on_kill``); once."""
        if self._killed:
            return
        self._killed = True
        self.stop_signal.set()
        if self.options.cancel_on_kill:
            self.outcomes.cancel_all(why)

    def close(self) -> None:
        if self.signals is not None:
            self.signals.close()
        self.manifest.close(complete=self.complete())

    def summary(self) -> BatchSummary:
        ledger = self.ledger
        total = ledger.total if ledger.total is not None else ledger.succeeded + ledger.failed
        return BatchSummary(
            self.manifest.path, total, ledger.succeeded, ledger.failed, ledger.earlier, tuple(ledger.errors)
        )

    def finish(self) -> BatchSummary:
        """Close the files and return the summary; raise when more items failed than allowed."""
        self.close()
        summary = self.summary()
        self.log.info(
            "Batch finished: %s. Manifest: %s",
            self.ledger.progress_line(time.monotonic(), 0),
            summary.manifest,
        )
        if self.ledger.over_budget():
            raise summary.budget_error(self.options.max_failed)
        return summary
