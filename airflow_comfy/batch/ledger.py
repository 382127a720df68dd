"""The bookkeeping of a running batch, with no I/O: slots per server, outcomes, failure budget, progress.

Rules (the runner, :mod:`airflow_comfy.batch.runner`, asks; this module decides):

1. **Slots.** At most ``max_in_flight`` of this batch's prompts are queued or running on one server.
   A new item goes to a server with a free slot that is not down, the one with the most free slots,
   then the shortest queue of other work, then at random (:meth:`Ledger.choose`).
2. **Down servers.** A server whose status reads or submissions fail is *down* from the first failure
   until one succeeds. After ``unreachable_grace`` seconds down, its prompts that had not started are
   moved to other servers (failover); those seen running are treated as lost (rule 3).
   When every server has been down that long, the batch cannot go on (:meth:`Ledger.stalled`).
3. **Lost prompts** (confirmed absent from the queue and the history, or running on a server gone
   for good) are submitted once more when ``resubmit_lost`` is set and it is their first attempt,
   else they fail. A prompt this batch cancelled itself (a killed earlier try), or found absent when
   a retry re-attaches, is submitted again without counting as lost.
4. **Failure budget.** ``max_failed`` is a count (``int``) or a fraction of all items (``float`` below
   1). A count that is exceeded stops new submissions at once; a fraction is judged when the number of
   items is known. Prompts already in flight are allowed to finish and are recorded.
5. **Progress** is summarised by :meth:`Ledger.progress_line`: done, failed, running, waiting, renders
   per minute over the batch so far and the estimated end, and per-server counts.

Invariant: a prompt id is in flight at most once, on exactly one server; counts only grow.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from airflow_comfy.batch.items import BatchItem

MAX_ERRORS_SHOWN = 5


@dataclass
class InFlight:
    """A prompt of this batch on a server."""

    item: BatchItem
    prompt_id: str
    server: str
    queued_at: float  # wall clock
    attempt: int = 1
    started: bool = False
    resumed: bool = False  # taken over from an earlier try's journal (rule 3)


@dataclass
class Ledger:
    servers: Sequence[str]
    max_in_flight: int
    max_failed: int | float = 0
    unreachable_grace: float = 300.0
    resubmit_lost: bool = False
    rng: random.Random = field(default_factory=random.Random)
    total: int | None = None
    in_flight: dict[str, InFlight] = field(default_factory=dict)
    retry: deque[tuple[BatchItem, int]] = field(default_factory=deque)
    succeeded: int = 0
    failed: int = 0
    earlier: int = 0  # items finished by an earlier try (counted in succeeded/failed too)
    baseline: int = 0  # items finished before this run started (not in its rate)
    done_by_server: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    down_since: dict[str, float] = field(default_factory=dict)
    started_at: float | None = None

    # --- slots -------------------------------------------------------------------------------------

    def running_on(self, server: str) -> int:
        return sum(1 for entry in self.in_flight.values() if entry.server == server)

    def choose(self, queue_lengths: Mapping[str, int] | None = None) -> str | None:
        """The server for the next item (rule 1), or ``None`` when no slot is free."""
        free = {s: self.max_in_flight - self.running_on(s) for s in self.servers if s not in self.down_since}
        candidates = [s for s, n in free.items() if n > 0]
        if not candidates:
            return None
        others = queue_lengths or {}
        best = max((free[s], -others.get(s, 0)) for s in candidates)
        return self.rng.choice([s for s in candidates if (free[s], -others.get(s, 0)) == best])

    def add(self, entry: InFlight) -> None:
        if entry.prompt_id in self.in_flight:
            raise ValueError(f"prompt {entry.prompt_id} is already in flight")
        self.in_flight[entry.prompt_id] = entry

    # --- outcomes ----------------------------------------------------------------------------------

    def success(self, prompt_id: str) -> InFlight:
        entry = self.in_flight.pop(prompt_id)
        self.succeeded += 1
        self.done_by_server[entry.server] += 1
        return entry

    def failure(self, item: BatchItem, message: str, prompt_id: str | None = None) -> InFlight | None:
        """Count ``item`` as failed (its prompt leaves the flight); returns its entry if it had one."""
        entry = self.in_flight.pop(prompt_id, None) if prompt_id else None
        self.failed += 1
        if len(self.errors) < MAX_ERRORS_SHOWN:
            self.errors.append(f"{item.describe()}: {message}")
        return entry

    def lost(self, prompt_id: str, *, reason: str) -> str | None:
        """Rule 3 for a prompt in flight: ``None`` when it goes back to the queue, else why it failed."""
        entry = self.in_flight[prompt_id]
        if entry.resumed:
            self.requeue(prompt_id)
            return None
        if self.resubmit_lost and entry.attempt == 1:
            self.requeue(prompt_id, next_attempt=True)
            return None
        return f"{reason}; not submitted again" + ("" if self.resubmit_lost else " (resubmit_lost is off)")

    def requeue(self, prompt_id: str, *, next_attempt: bool = False, front: bool = False) -> None:
        """Take ``prompt_id`` out of the flight; its item is submitted again (``front``: next)."""
        entry = self.in_flight.pop(prompt_id)
        taken = (entry.item, entry.attempt + (1 if next_attempt else 0))
        if front:
            self.retry.appendleft(taken)
        else:
            self.retry.append(taken)

    # --- servers -----------------------------------------------------------------------------------

    def server_failed(self, server: str, now: float) -> None:
        self.down_since.setdefault(server, now)

    def server_answered(self, server: str) -> None:
        self.down_since.pop(server, None)

    def gone(self, now: float) -> list[str]:
        """Servers down for longer than ``unreachable_grace`` (rule 2)."""
        return [s for s, since in self.down_since.items() if now - since > self.unreachable_grace]

    def stalled(self, now: float) -> bool:
        return bool(self.servers) and len(self.gone(now)) == len(self.servers)

    # --- the failure budget ------------------------------------------------------------------------

    def budget(self) -> int | None:
        """How many items may fail; ``None`` while a fraction waits for the number of items."""
        if isinstance(self.max_failed, float) and self.max_failed < 1:
            return None if self.total is None else int(self.max_failed * self.total)
        return int(self.max_failed)

    def over_budget(self) -> bool:
        limit = self.budget()
        return limit is not None and self.failed > limit

    # --- progress ----------------------------------------------------------------------------------

    def progress_line(self, now: float, waiting: int | None) -> str:
        done = self.succeeded + self.failed - self.baseline
        rate = 0.0
        if self.started_at is not None and now > self.started_at and done:
            rate = done / (now - self.started_at) * 60
        parts = [f"{self.succeeded} done", f"{self.failed} failed", f"{len(self.in_flight)} running"]
        if waiting is not None:
            parts.append(f"{waiting} waiting")
        if self.earlier:
            parts.append(f"{self.earlier} finished by an earlier try")
        line = ", ".join(parts) + f"; {rate:.1f} renders/min"
        if waiting is not None and rate > 0:
            left = (waiting + len(self.in_flight)) / rate
            line += f", about {left:.1f} min left"
        servers = "; ".join(
            f"{server}: {self.running_on(server)} running, {self.done_by_server[server]} done"
            + (" (down)" if server in self.down_since else "")
            for server in self.servers
        )
        return f"{line}. Servers: {servers}"
