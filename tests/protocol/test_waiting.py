"""The waiting policy as a table: inputs with a fake clock, and the verdict each must give. No I/O."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_comfy.exceptions import (
    ComfyUIConnectionError,
    ComfyUIError,
    ComfyUIExecutionError,
    ComfyUIHTTPError,
    ComfyUIPromptLostError,
    ComfyUIResponseError,
    ComfyUITimeoutError,
)
from airflow_comfy.protocol.outputs import OutputRef
from airflow_comfy.protocol.states import PromptState, PromptStatus
from airflow_comfy.protocol.waiting import (
    PromptWait,
    StartOutage,
    Verdict,
    WaitOutcome,
    WaitRules,
    describe_status,
)

P = "11111111-2222-4333-8444-555555555555"
RULES = WaitRules(timeout=100.0, lost_grace=30.0, unreachable_grace=60.0, log_interval=10.0)


def status(state: PromptState, **kwargs: Any) -> PromptStatus:
    return PromptStatus(P, state, **kwargs)


PENDING = status(PromptState.PENDING, queue_position=2, queue_size=5)
RUNNING = status(PromptState.RUNNING)
MISSING = status(PromptState.NOT_FOUND)
SUCCESS = status(PromptState.SUCCESS, outputs=(OutputRef("9", "images", "a.png", "", "output"),))
ERROR = status(PromptState.ERROR, failure={"node_id": "2", "exception_message": "boom"})
DOWN = ComfyUIConnectionError("Cannot reach ComfyUI for GET http://h/queue: connection refused")
GARBAGE = ComfyUIResponseError("answered an HTML page where JSON was expected")
DENIED = ComfyUIHTTPError("HTTP 401", url="http://h/queue", status_code=401)

# (name, [(time, input)], verdict of the last input)
TABLE: list[tuple[str, list[tuple[float, Any]], Verdict]] = [
    ("pending goes on", [(1, PENDING)], Verdict.CONTINUE),
    ("success ends", [(1, PENDING), (2, RUNNING), (3, SUCCESS)], Verdict.DONE),
    ("an error outcome ends", [(1, ERROR)], Verdict.DONE),
    ("missing within the grace goes on", [(1, MISSING), (30.9, MISSING)], Verdict.CONTINUE),
    ("missing for the grace is lost", [(1, MISSING), (31, MISSING)], Verdict.LOST),
    (
        "seen again resets the lost clock",
        [(1, MISSING), (20, PENDING), (40, MISSING), (69, MISSING)],
        Verdict.CONTINUE,
    ),
    ("transient errors within the grace", [(1, DOWN), (30, GARBAGE), (61, DOWN)], Verdict.CONTINUE),
    ("transient errors past the grace", [(1, DOWN), (30, GARBAGE), (61.5, DOWN)], Verdict.UNREACHABLE),
    ("an answer resets the unreachable clock", [(1, DOWN), (50, RUNNING), (100 - 1, DOWN)], Verdict.CONTINUE),
    ("a non-retryable error fails at once", [(1, DENIED)], Verdict.FAILED),
    ("the deadline beats everything", [(1, RUNNING), (100, SUCCESS)], Verdict.TIMED_OUT),
    ("a tick past the deadline", [(1, RUNNING), (100.5, None)], Verdict.TIMED_OUT),
    ("a tick before it goes on", [(1, RUNNING), (99, None)], Verdict.CONTINUE),
]


def feed(wait: PromptWait, now: float, item: Any) -> Any:
    if item is None:
        return wait.tick(now)
    if isinstance(item, PromptStatus):
        return wait.status(now, item)
    return wait.error(now, item)


@pytest.mark.parametrize(("name", "inputs", "verdict"), TABLE, ids=[row[0] for row in TABLE])
def test_policy_table(name: str, inputs: list[tuple[float, Any]], verdict: Verdict) -> None:
    wait = PromptWait(P, "http://h", deadline=100.0, rules=RULES)
    decisions = [feed(wait, now, item) for now, item in inputs]
    assert [d.verdict for d in decisions[:-1]] == [Verdict.CONTINUE] * (len(decisions) - 1)
    assert decisions[-1].verdict is verdict
    assert (decisions[-1].outcome is None) == (verdict is Verdict.CONTINUE)


def test_the_lost_clock_starts_at_the_answer_not_at_the_read() -> None:
    """A read that spent 16 s retrying and then said NOT_FOUND starts the grace when it answered."""
    wait = PromptWait(P, "http://h", deadline=1000.0, rules=RULES)
    assert wait.error(0, DOWN).verdict is Verdict.CONTINUE
    assert wait.status(16, MISSING).verdict is Verdict.CONTINUE
    assert wait.status(45, MISSING).verdict is Verdict.CONTINUE  # 29 s after the first "not found"
    assert wait.status(46, MISSING).verdict is Verdict.LOST


def test_an_end_seen_on_the_websocket_is_never_lost() -> None:
    wait = PromptWait(P, "http://h", deadline=1000.0, rules=RULES)
    wait.saw_end()
    assert wait.status(1, MISSING).verdict is Verdict.CONTINUE
    assert wait.status(500, MISSING).verdict is Verdict.CONTINUE


@pytest.mark.parametrize(
    ("inputs", "error", "words"),
    [
        (
            [(1, MISSING), (31, MISSING)],
            ComfyUIPromptLostError,
            ["neither the history nor the queue", "resubmit"],
        ),
        ([(101, RUNNING)], ComfyUITimeoutError, ["did not finish within 100 s"]),
        (
            [(1, DOWN), (62, DOWN)],
            ComfyUIConnectionError,
            ["connection refused", "unreachable grace of 60 s"],
        ),
        ([(1, DENIED)], ComfyUIHTTPError, ["HTTP 401"]),
        ([(1, ERROR)], ComfyUIExecutionError, ["failed in node 2", "boom"]),
    ],
)
def test_each_ending_raises_its_error_with_one_message(
    inputs: list[tuple[float, Any]], error: type[ComfyUIError], words: list[str]
) -> None:
    wait = PromptWait(P, "http://h", deadline=100.0, rules=RULES)
    decision = [feed(wait, now, item) for now, item in inputs][-1]
    assert decision.outcome is not None
    with pytest.raises(error) as caught:
        decision.outcome.result()
    assert all(word in str(caught.value) for word in words), str(caught.value)


def test_an_unknown_timeout_names_the_deadline() -> None:
    wait = PromptWait(P, "http://h", deadline=10.0, rules=WaitRules(timeout=None))
    outcome = wait.tick(11).outcome
    assert outcome is not None and "before the task's deadline" in outcome.message


def test_progress_lines_on_change_or_every_log_interval() -> None:
    wait = PromptWait(P, "http://h", deadline=1000.0, rules=RULES)
    logs = [
        wait.status(0, PENDING).log,
        wait.status(2, PENDING).log,  # unchanged, interval not passed: quiet
        wait.status(4, status(PromptState.PENDING, queue_position=0, queue_size=5)).log,  # moved up
        wait.status(6, RUNNING).log,
        wait.status(8, RUNNING).log,
        wait.status(16, RUNNING).log,  # log_interval passed
    ]
    assert logs == [
        "pending, position 3 of 5 in the queue (2 ahead)",
        "",
        "pending, position 1 of 5 in the queue (0 ahead)",
        "running",
        "",
        "running",
    ]
    assert describe_status(RUNNING) == "running"


@pytest.mark.parametrize(
    "outcome",
    [
        WaitOutcome(Verdict.DONE, P, "http://h", status=SUCCESS),
        WaitOutcome(Verdict.DONE, P, "http://h", status=ERROR),
        WaitOutcome(Verdict.LOST, P, "http://h", message="gone"),
        WaitOutcome(Verdict.TIMED_OUT, P, "http://h", message="late"),
        WaitOutcome(Verdict.FAILED, P, "http://h", message="broken"),
    ],
)
def test_payload_round_trip(outcome: WaitOutcome) -> None:
    payload = outcome.to_payload()
    back = WaitOutcome.from_payload(payload)
    assert (
        back.verdict is outcome.verdict and back.server == outcome.server and back.message == outcome.message
    )
    if outcome.status is not None:
        assert back.status is not None and back.status.state is outcome.status.state
        assert back.status.outputs == outcome.status.outputs


def test_unreachable_travels_as_failed_for_earlier_versions() -> None:
    payload = WaitOutcome(Verdict.UNREACHABLE, P, "http://h", message="down").to_payload()
    assert payload["status"] == "failed"


def test_an_event_of_the_previous_version_still_reads() -> None:
    old = {
        "status": "success",
        "prompt_id": P,
        "base_url": "http://h",
        "outputs": [
            {"node_id": "9", "kind": "images", "filename": "a.png", "subfolder": "", "type": "output"}
        ],
        "texts": {},
        "failure": None,
    }
    assert WaitOutcome.from_payload(old).result().outputs == SUCCESS.outputs


# --- the start of a run: StartOutage -------------------------------------------------------------

REFUSED_POST = ComfyUIConnectionError("Cannot reach ComfyUI for POST http://h/prompt: connection refused")
REFUSED_POST.never_sent = True
RESET_POST = ComfyUIConnectionError("Cannot reach ComfyUI for POST http://h/prompt: connection reset")
RESET_POST.never_sent = False

# (name, [(time, error, posted)], verdict of the last input)
START_TABLE: list[tuple[str, list[tuple[float, BaseException, bool]], Verdict]] = [
    ("down before the POST: go on", [(0.0, DOWN, False)], Verdict.CONTINUE),
    ("down within the grace", [(0.0, DOWN, False), (59.0, DOWN, False)], Verdict.CONTINUE),
    ("down for the whole grace", [(0.0, DOWN, False), (60.0, DOWN, False)], Verdict.UNREACHABLE),
    ("a POST that never left: go on", [(0.0, REFUSED_POST, True)], Verdict.CONTINUE),
    ("a POST that may have arrived: fail now", [(0.0, RESET_POST, True)], Verdict.FAILED),
    (
        "a 500 after the POST: fail now",
        [(0.0, ComfyUIHTTPError("500", url="http://h/prompt", status_code=500), True)],
        Verdict.FAILED,
    ),
    ("a 401: fail now", [(0.0, DENIED, False)], Verdict.FAILED),
    ("the clock counts from the first failure", [(10.0, DOWN, False), (69.0, DOWN, False)], Verdict.CONTINUE),
]


@pytest.mark.parametrize(("name", "inputs", "verdict"), START_TABLE, ids=[row[0] for row in START_TABLE])
def test_start_outage_table(
    name: str, inputs: list[tuple[float, BaseException, bool]], verdict: Verdict
) -> None:
    outage = StartOutage("http://h", 60.0)
    decisions = [outage.failed(now, 1_700_000_000.0 + now, exc, posted=posted) for now, exc, posted in inputs]
    assert decisions[-1].verdict is verdict, name


def test_start_outage_says_how_long_and_until_when() -> None:
    outage = StartOutage("http://h", 60.0)
    outage.failed(0.0, 0.0, DOWN, posted=False)
    line = outage.failed(20.0, 20.0, DOWN, posted=False).warning
    assert line.startswith("ComfyUI unreachable for 20 s, still trying until 00:01:00 UTC"), line
    ended = outage.failed(61.0, 61.0, DOWN, posted=False).outcome
    assert ended is not None
    error = ended.error()
    assert isinstance(error, ComfyUIConnectionError)
    assert "stayed unreachable for 61 s, the unreachable grace of 60 s, before anything was submitted" in str(
        error
    )


def test_start_outage_pauses_no_longer_than_the_grace_left() -> None:
    outage = StartOutage("http://h", 60.0)
    assert outage.pause(0.0, 10.0) == 10.0
    outage.failed(0.0, 0.0, DOWN, posted=False)
    assert outage.pause(55.0, 10.0) == 5.0 and outage.pause(70.0, 10.0) == 0.0
