"""The request flows, driven by a scripted runner: which requests, in which order, for which answers.

No I/O: the script maps each request to an answer (or a failure) the way a server would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from airflow_comfy.exceptions import (
    ComfyUIConnectionError,
    ComfyUIError,
    ComfyUIHTTPError,
    ComfyUIResponseError,
    ComfyUITimeoutError,
    ComfyUIValidationError,
)
from airflow_comfy.protocol import flows
from airflow_comfy.protocol.flows import Answer, Call, Fanout, Note, Pause
from airflow_comfy.protocol.states import PromptState

P = "11111111-2222-4333-8444-555555555555"
EMPTY_QUEUE = {"queue_running": [], "queue_pending": []}
QUEUED = {"queue_running": [], "queue_pending": [[3, P, {}, {}, []]]}
RUNNING = {"queue_running": [[2, P, {}, {}, []]], "queue_pending": []}
DONE = {P: {"status": {"status_str": "success", "messages": []}, "outputs": {}}}

Script = Callable[[Call], Any]


def drive(flow: flows.Flow[Any], script: Script) -> tuple[Any, list[Any]]:
    """Run ``flow`` like a transport would; returns its result and every step it took."""
    steps: list[Any] = []
    reply: Any = None
    failure: BaseException | None = None
    while True:
        try:
            step = flow.throw(failure) if failure is not None else flow.send(reply)
        except StopIteration as stop:
            return stop.value, steps
        steps.append(step)
        reply, failure = None, None
        if isinstance(step, Fanout):
            reply = [_answer(script, call) for call in step.calls]
        elif isinstance(step, Call):
            result = _answer(script, step)
            if isinstance(result, BaseException):
                failure = result
            else:
                reply = result


def _answer(script: Script, call: Call) -> Any:
    result = script(call)
    if isinstance(result, BaseException):
        return result
    if isinstance(result, Answer):
        return result
    return Answer(200, result)


def requests(steps: list[Any]) -> list[str]:
    out = []
    for step in steps:
        calls = step.calls if isinstance(step, Fanout) else (step,) if isinstance(step, Call) else ()
        out.extend(f"{c.method} {c.path}" for c in calls)
    return out


def server(queue: Any, history: Any, **routes: Any) -> Script:
    def answer(call: Call) -> Any:
        key = f"{call.method} {call.path}"
        if key in routes:
            value = routes[key]
            return value(call) if callable(value) else value
        if call.path == "/queue" and call.method == "GET":
            return queue
        if call.path.startswith("/history/"):
            return history
        if call.path == "/history" and call.method == "GET":
            return history  # the listing: the same entries
        if call.method == "POST":
            return Answer(200, None)
        raise AssertionError(f"unexpected request {key}")

    return answer


@pytest.mark.parametrize(
    ("queue", "history", "state", "sent"),
    [
        (QUEUED, {}, PromptState.PENDING, ["GET /queue"]),
        (RUNNING, {}, PromptState.RUNNING, ["GET /queue"]),
        (EMPTY_QUEUE, DONE, PromptState.SUCCESS, ["GET /queue", f"GET /history/{P}"]),
    ],
)
def test_a_status_read_is_queue_first_and_at_most_two_requests(
    queue: Any, history: Any, state: PromptState, sent: list[str]
) -> None:
    status, steps = drive(flows.read_status(P), server(queue, history))
    assert status.state is state and requests(steps) == sent
    assert all(step.headers.get("Cache-Control") == "no-cache" for step in steps if isinstance(step, Call))


def test_the_final_read_after_the_end_marker_is_one_request() -> None:
    status, steps = drive(flows.read_final_status(P), server(EMPTY_QUEUE, DONE))
    assert status.state is PromptState.SUCCESS and requests(steps) == [f"GET /history/{P}"]


def test_a_batched_read_asks_the_queue_once() -> None:
    others = ["a", "b"]
    status, steps = drive(flows.read_statuses([P, *others]), server(QUEUED, {}))
    assert requests(steps)[:3] == ["GET /queue", "GET /history/a", "GET /history/b"]
    assert requests(steps)[3:] == ["GET /history", "GET /history/a", "GET /history/b"]  # one listing
    assert status[P].state is PromptState.PENDING and status["a"].state is PromptState.NOT_FOUND


def test_a_failed_history_read_is_that_prompts_result_only() -> None:
    def script(call: Call) -> Any:
        if call.path == "/history/a":
            return ComfyUIConnectionError("reset")
        return server(EMPTY_QUEUE, {})(call)

    found, _ = drive(flows.read_statuses(["a", "b"]), script)
    assert isinstance(found["a"], ComfyUIConnectionError) and found["b"].state is PromptState.NOT_FOUND


def stale(history_one: Any, busted: Any, listing: Any) -> Script:
    """/history/<id> answers ``history_one`` (a stale cache), ``busted`` with the cache-busting query."""

    def answer(call: Call) -> Any:
        if call.path == "/queue":
            return EMPTY_QUEUE
        if call.path == "/history":
            assert call.params and call.params["max_items"] == flows.CONFIRM_HISTORY_ITEMS
            assert call.params["nocache"] and call.headers["Cache-Control"] == "no-cache"
            return listing
        if call.path == f"/history/{P}":
            return busted if call.params and call.params.get("nocache") else history_one
        raise AssertionError(call)

    return answer


DOWN = ComfyUIConnectionError("reset")
NO_LISTING = ComfyUIHTTPError("404", url="http://h/history", status_code=404)


# (name, stale /history/<id>, cache-busted /history/<id>, listing, state or error class)
CONFIRM_TABLE: list[tuple[str, Any, Any, Any, Any]] = [
    ("a stale {} the busted read contradicts", {}, DONE, {}, PromptState.SUCCESS),
    ("a stale {} the listing contradicts", {}, {}, DONE, PromptState.SUCCESS),
    ("both agree: absent", {}, {}, {}, PromptState.NOT_FOUND),
    ("the listing failed: not confirmed", {}, {}, DOWN, ComfyUIConnectionError),
    ("the busted read failed: not confirmed", {}, DOWN, {}, ComfyUIConnectionError),
    ("a failure does not hide a found entry", {}, DOWN, DONE, PromptState.SUCCESS),
    ("a listing refused (404) is unconfirmed, not fatal", {}, {}, NO_LISTING, ComfyUIResponseError),
]


@pytest.mark.parametrize(
    ("name", "one", "busted", "listing", "want"), CONFIRM_TABLE, ids=[r[0] for r in CONFIRM_TABLE]
)
def test_an_absence_is_confirmed_past_any_cache(
    name: str, one: Any, busted: Any, listing: Any, want: Any
) -> None:
    found, steps = drive(flows.read_statuses([P], nonce="n1"), stale(one, busted, listing))
    result = found[P]
    if isinstance(want, PromptState):
        assert result.state is want, name
    else:
        assert isinstance(result, want), name
    assert requests(steps) == ["GET /queue", f"GET /history/{P}", "GET /history", f"GET /history/{P}"]


def test_a_stale_history_does_not_make_a_submission_resend() -> None:
    """The duplicate check of a POST that may have arrived confirms the absence too."""
    posts = []

    def script(call: Call) -> Any:
        if call.method == "POST":
            posts.append(call)
            return ComfyUITimeoutError("read timeout") if len(posts) == 1 else Answer(200, {"prompt_id": P})
        return stale({}, {}, DONE)(call)

    result, _ = drive(flows.submit_prompt({"prompt_id": P, "prompt": {}}), script)
    assert result["already_submitted"] and len(posts) == 1


@pytest.mark.parametrize(
    ("jobs_api", "queue", "done", "sent"),
    [
        (True, RUNNING, "cancelled through /api/jobs", [f"POST /api/jobs/{P}/cancel"]),
        (
            False,
            QUEUED,
            "removed from the queue",
            ["GET /queue", "POST /queue", "GET /queue"],
        ),
        (False, RUNNING, "interrupted", ["GET /queue", "POST /interrupt"]),
        (False, EMPTY_QUEUE, "nothing to do (it is success)", ["GET /queue", f"GET /history/{P}"]),
    ],
)
def test_cancel(jobs_api: bool, queue: Any, done: str, sent: list[str]) -> None:
    history = DONE if queue is EMPTY_QUEUE else {}
    result, steps = drive(flows.cancel_prompt(P, jobs_api=jobs_api), server(queue, history))
    assert result == done and requests(steps) == sent


def test_cancel_falls_back_when_the_jobs_route_is_missing() -> None:
    missing = ComfyUIHTTPError("404", url="u", status_code=404)
    script = server(RUNNING, {}, **{f"POST /api/jobs/{P}/cancel": missing})
    result, steps = drive(flows.cancel_prompt(P, jobs_api=True), script)
    assert result == "interrupted" and requests(steps)[-1] == "POST /interrupt"


def test_a_prompt_that_starts_while_being_removed_is_interrupted_by_id() -> None:
    queues = iter([QUEUED, RUNNING])
    script = server(None, {}, **{"GET /queue": lambda _call: next(queues)})
    result, steps = drive(flows.cancel_prompt(P, jobs_api=False), script)
    assert result.startswith("interrupted (it started") and requests(steps)[-1] == "POST /interrupt"
    assert next(s for s in steps if isinstance(s, Call) and s.path == "/interrupt").json == {"prompt_id": P}


@pytest.mark.parametrize(("code", "answer"), [(200, True), (404, False), (405, False)])
def test_jobs_api_probe(code: int, answer: bool) -> None:
    reply = Answer(200, None) if code == 200 else ComfyUIHTTPError("x", url="u", status_code=code)
    assert drive(flows.probe_jobs_api(), lambda _call: reply)[0] is answer


BODY = {"prompt": {}, "client_id": "c", "prompt_id": P}


def test_submit_once() -> None:
    result, steps = drive(
        flows.submit_prompt(BODY), server(None, {}, **{"POST /prompt": {"prompt_id": P, "number": 1}})
    )
    assert result["number"] == 1 and requests(steps) == ["POST /prompt"]
    post = steps[0]
    assert post.resend_safe_only and 400 in post.allow_status


def test_a_rejection_names_the_node() -> None:
    rejected = Answer(
        400,
        {
            "error": {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
            },
            "node_errors": {
                "2": {
                    "class_type": "ImageBlur",
                    "errors": [{"message": "Value too big", "extra_info": {"input_name": "blur_radius"}}],
                }
            },
        },
    )
    with pytest.raises(ComfyUIValidationError, match=r"node 2 \(ImageBlur\): blur_radius: Value too big"):
        drive(flows.submit_prompt(BODY), server(None, {}, **{"POST /prompt": rejected}))


def test_a_post_that_may_have_arrived_is_looked_for_and_never_resent_when_found() -> None:
    timed_out = ComfyUITimeoutError("no answer")
    result, steps = drive(flows.submit_prompt(BODY), server(QUEUED, {}, **{"POST /prompt": timed_out}))
    assert result["already_submitted"] and requests(steps) == ["POST /prompt", "GET /queue"]
    assert any(isinstance(s, Note) and "not resending blindly" in s.message for s in steps)


def test_a_post_that_did_not_arrive_is_sent_once_more_after_two_looks() -> None:
    answers = iter([ComfyUITimeoutError("no answer"), {"prompt_id": P, "number": 7}])
    script = server(EMPTY_QUEUE, {}, **{"POST /prompt": lambda _call: next(answers)})
    result, steps = drive(flows.submit_prompt(BODY), script)
    assert result["number"] == 7
    assert requests(steps).count("POST /prompt") == 2
    assert [s.seconds for s in steps if isinstance(s, Pause)] == [flows.SUBMIT_LOOK_PAUSE]


def test_unsure_whether_it_arrived_fails_rather_than_risk_a_second_job() -> None:
    timed_out = ComfyUITimeoutError("no answer")
    script = server(ComfyUIConnectionError("down"), {}, **{"POST /prompt": timed_out})
    with pytest.raises(ComfyUITimeoutError):
        drive(flows.submit_prompt(BODY), script)


def test_resends_are_bounded() -> None:
    script = server(EMPTY_QUEUE, {}, **{"POST /prompt": ComfyUIHTTPError("500", url="u", status_code=500)})
    with pytest.raises(ComfyUIHTTPError):
        drive(flows.submit_prompt(BODY), script)


def test_a_failure_that_never_left_is_raised_to_the_runner_policy() -> None:
    refused = ComfyUIConnectionError("refused")
    refused.never_sent = True  # the transport's retry policy already resent it as often as allowed
    with pytest.raises(ComfyUIError):
        drive(flows.submit_prompt(BODY), server(None, {}, **{"POST /prompt": refused}))
