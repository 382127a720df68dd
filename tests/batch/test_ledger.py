"""The batch's scheduling rules (``airflow_comfy.batch.ledger``), with no I/O."""

from __future__ import annotations

import random

import pytest

from airflow_comfy.batch.items import BatchItem
from airflow_comfy.batch.ledger import MAX_ERRORS_SHOWN, InFlight, Ledger


def _ledger(**kwargs: object) -> Ledger:
    defaults: dict[str, object] = {"servers": ["a", "b"], "max_in_flight": 2, "rng": random.Random(1)}
    return Ledger(**{**defaults, **kwargs})  # type: ignore[arg-type]


def _fly(ledger: Ledger, n: int, server: str, **kwargs: object) -> InFlight:
    entry = InFlight(BatchItem(str(n), n), f"p{n}", server, 0.0, **kwargs)  # type: ignore[arg-type]
    ledger.add(entry)
    return entry


@pytest.mark.parametrize(
    ("in_flight", "down", "queues", "expected"),
    [
        ({}, set(), {"a": 0, "b": 5}, {"a"}),  # equal free slots: the shorter queue of other work
        ({"a": 1}, set(), {}, {"b"}),  # the most free slots
        ({"a": 2, "b": 2}, set(), {}, set()),  # no slot free anywhere: wait
        ({"a": 1}, {"b"}, {}, {"a"}),  # a server that is down gets nothing
        ({"a": 2}, {"b"}, {}, set()),
        ({}, set(), {}, {"a", "b"}),  # a tie: either, at random
    ],
)
def test_choose(
    in_flight: dict[str, int], down: set[str], queues: dict[str, int], expected: set[str]
) -> None:
    seen = set()
    for seed in range(20):
        ledger = _ledger(rng=random.Random(seed))
        n = 0
        for server, count in in_flight.items():
            for _ in range(count):
                _fly(ledger, n := n + 1, server)
        for server in down:
            ledger.server_failed(server, 0.0)
        choice = ledger.choose(queues)
        seen.add(choice) if choice else None
    assert seen == expected


def test_a_prompt_is_in_flight_once() -> None:
    ledger = _ledger()
    _fly(ledger, 1, "a")
    with pytest.raises(ValueError, match="already in flight"):
        _fly(ledger, 1, "b")


@pytest.mark.parametrize(
    ("resubmit_lost", "attempt", "resumed", "requeued"),
    [
        (False, 1, False, False),  # lost, not allowed again: failed
        (True, 1, False, True),  # once more
        (True, 2, False, False),  # only once
        (False, 1, True, True),  # an earlier try's prompt found absent: the retry's to run
    ],
)
def test_lost_rule(resubmit_lost: bool, attempt: int, resumed: bool, requeued: bool) -> None:
    ledger = _ledger(resubmit_lost=resubmit_lost)
    _fly(ledger, 1, "a", attempt=attempt, resumed=resumed)
    why = ledger.lost("p1", reason="gone")
    assert (why is None) is requeued
    if requeued:
        assert not ledger.in_flight
        item, next_attempt = ledger.retry[0]
        assert item.key == "1" and next_attempt == attempt + (0 if resumed else 1)
    else:
        assert why is not None and why.startswith("gone; not submitted again")


def test_down_servers_are_gone_after_the_grace_and_all_gone_is_a_stall() -> None:
    ledger = _ledger(unreachable_grace=10.0)
    ledger.server_failed("a", 100.0)
    ledger.server_failed("a", 105.0)  # counted from the first failure
    assert ledger.gone(109.0) == [] and ledger.gone(111.0) == ["a"]
    assert not ledger.stalled(111.0)
    ledger.server_failed("b", 108.0)
    assert ledger.stalled(119.0)
    ledger.server_answered("a")
    assert not ledger.stalled(200.0)


@pytest.mark.parametrize(
    ("max_failed", "total", "failed", "over"),
    [
        (0, None, 1, True),
        (2, None, 2, False),
        (2, None, 3, True),
        (0.1, None, 5, False),  # a fraction waits for the number of items
        (0.1, 100, 10, False),
        (0.1, 100, 11, True),
    ],
)
def test_failure_budget(max_failed: float, total: int | None, failed: int, over: bool) -> None:
    ledger = _ledger(max_failed=max_failed, total=total)
    for n in range(failed):
        ledger.failure(BatchItem(str(n), n), "boom")
    assert ledger.over_budget() is over
    assert len(ledger.errors) == min(failed, MAX_ERRORS_SHOWN)


def test_progress_line_counts_rates_and_servers() -> None:
    ledger = _ledger(total=10)
    ledger.started_at = 0.0
    _fly(ledger, 1, "a")
    _fly(ledger, 2, "a")
    ledger.success("p2")
    ledger.failure(BatchItem("3", 3), "boom")
    line = ledger.progress_line(60.0, waiting=7)
    assert line.startswith("1 done, 1 failed, 1 running, 7 waiting; 2.0 renders/min, about 4.0 min left")
    assert line.endswith("Servers: a: 1 running, 1 done; b: 0 running, 0 done")
