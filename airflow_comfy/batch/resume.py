"""Taking over what earlier tries (or deferral cycles) of a batch left: one pass over the items.

Items with a manifest line are finished: they are skipped, and their results are read back from the
manifest, never from the server (ComfyUI keeps only its last 10,000 history entries). Prompts of
the journal with no manifest line are taken over as in flight on the server they were posted to,
with their full items; the next round reads their status (rule 3 of
:mod:`airflow_comfy.batch.ledger` says what an absent one becomes).

Invariant: at the start of a try, a manifest line whose prompt id is not the one this task instance
would give the item (another run, task or workflow wrote into the same ``output_dir``, or the item
changed) stops the batch before anything is posted: its results would be mixed with another
batch's. (Deferral cycles of the try do not check again.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from airflow_comfy.batch.items import BatchItem, ItemError
from airflow_comfy.batch.ledger import InFlight, Ledger
from airflow_comfy.batch.manifest import ManifestState
from airflow_comfy.batch.records import epoch
from airflow_comfy.exceptions import ComfyUIWorkflowError


def take_over(
    items: Iterable[BatchItem | ItemError],
    state: ManifestState,
    ledger: Ledger,
    prompt_id_of: Callable[[BatchItem], str],
    *,
    default_server: str,
    resumed: bool,
    where: str,
    try_number: int,
) -> int:
    check = resumed  # a deferral cycle continues what this try checked at its start
    """Count what the manifest holds (as of try ``try_number``), check it against ``items``, put the
    journal's prompts in flight; returns the number of items.

    ``resumed``: the journal is an earlier *try*'s (absent prompts are simply posted again), not this
    try's previous deferral cycle (absent prompts are lost). A journal server that is no longer one of
    the batch's is replaced by ``default_server`` (where the status read finds the prompt absent).
    """
    finished = list(state.finished.values())
    ledger.succeeded = sum(1 for f in finished if f.status == "succeeded")
    ledger.failed = len(finished) - ledger.succeeded
    ledger.baseline = len(finished)
    ledger.earlier = sum(1 for f in finished if f.try_number < try_number)
    ledger.errors = list(state.errors)  # failures of earlier tries count against max_failed too
    total = 0
    for raw in items:
        total += 1
        if isinstance(raw, ItemError):
            continue
        done = state.finished.get(raw.key)
        if check and done is not None and done.prompt_id and done.prompt_id != prompt_id_of(raw):
            raise ComfyUIWorkflowError(
                f"{where} already lists {raw.describe()} for other work (another run, task or workflow, "
                "or the item changed): give each run its own output_dir, e.g. one ending in {{ run_id }}"
            )
        sub = state.submitted.get(raw.key)
        if sub is None or done is not None:
            continue
        server = sub.server if sub.server in ledger.servers else default_server
        ledger.add(InFlight(raw, sub.prompt_id, server, epoch(sub.queued_at), sub.attempt, resumed=resumed))
    return total
