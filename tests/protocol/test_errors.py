"""Error messages from ComfyUI's recorded error answers, and the HTTP/transport error helpers."""

from __future__ import annotations

import pytest

from airflow_comfy.exceptions import (
    ComfyUIAuthError,
    ComfyUIConnectionError,
    ComfyUIExecutionError,
    ComfyUIHTTPError,
    ComfyUIInterruptedError,
    ComfyUIResponseError,
    ComfyUITimeoutError,
    ComfyUIValidationError,
)
from airflow_comfy.protocol import errors
from airflow_comfy.protocol.states import PromptState, PromptStatus, status_from_history
from protocol.protocol_transcripts import names, response_body, transcript

REJECTIONS = [n for n in names("prompt_err_") if transcript(n)["response"]["status"] == 400]


def test_the_contract_has_rejections():
    assert len(REJECTIONS) >= 14


@pytest.mark.parametrize("name", REJECTIONS)
def test_every_rejection_lists_every_node_error(name):
    body = response_body(name)
    exc = errors.validation_error(body)
    assert isinstance(exc, ComfyUIValidationError)
    assert exc.error == body["error"] and exc.node_errors == body["node_errors"]
    lines = str(exc).split("\n")
    head = lines[0]
    assert head.startswith(body["error"]["message"])
    assert f"[{body['error']['type']}]" in head
    expected = []
    for node_id, entry in body["node_errors"].items():
        for err in entry["errors"]:
            line = f"  - node {node_id} ({entry['class_type']}): "
            if err["extra_info"].get("input_name"):
                line += err["extra_info"]["input_name"] + ": "
            line += err["message"]
            if err["details"]:
                line += " — " + err["details"]
            expected.append(line)
    assert len(lines[1:]) == len(expected)
    for line, start in zip(lines[1:], expected, strict=True):
        # ComfyUI's own wording first; an explanation in parentheses may follow.
        assert line == start or (line.startswith(start + " (") and line.endswith(")")), line
    if not body["node_errors"] and body["error"]["details"]:
        assert head.endswith(": " + body["error"]["details"])
    # Tracebacks of exception_during_validation stay in the structure, not in the message.
    assert "Traceback" not in str(exc) and "File " not in str(exc)


def test_exact_lines_for_known_rejections():
    assert str(errors.validation_error(response_body("prompt_err_bad_combo"))).split("\n")[1] == (
        "  - node 2 (ImageScale): upscale_method: Value not in list — "
        "upscale_method: 'foo' not in ['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos']"
    )
    assert str(errors.validation_error(response_body("prompt_err_value_too_big"))) == (
        "Prompt outputs failed validation [prompt_outputs_failed_validation]\n"
        "  - node 1 (EmptyImage): width: Value 99999 bigger than max of 16384 — width"
    )
    assert str(errors.validation_error(response_body("prompt_err_link_bad_slot"))).split("\n")[1] == (
        "  - node 2 (SaveImage): Exception when validating node — tuple index out of range"
        " (node 2 links to an output slot that its source node does not have)"
    )
    assert str(errors.validation_error(response_body("prompt_err_link_nonexistent_node"))).split("\n")[1] == (
        "  - node 2 (SaveImage): Exception when validating node — '42'"
        " (node 42 does not exist in the workflow; node 2 links to it)"
    )
    assert str(errors.validation_error(response_body("prompt_err_missing_class_type"))) == (
        "Cannot execute because a node is missing the class_type property. [invalid_prompt]: Node ID '#1'"
    )


def test_several_nodes_sorted_numerically():
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
        "node_errors": {
            "10": {"class_type": "B", "errors": [{"message": "m10", "details": "", "extra_info": {}}]},
            "9": {
                "class_type": "A",
                "errors": [
                    {"message": "first", "details": "d1", "extra_info": {"input_name": "x"}},
                    {"type": "only_type", "extra_info": {}},
                ],
            },
            "sub:1": {"errors": [{"message": "m", "extra_info": {}}]},
        },
    }
    assert errors.node_error_lines(body["node_errors"]) == [
        "node 9 (A): x: first — d1",
        "node 9 (A): only_type",
        "node 10 (B): m10",
        "node sub:1 (?): m",
    ]


def test_partial_node_errors_of_an_accepted_prompt_read_alike():
    body = transcript("prompt_ok_partial_node_errors")["steps"][0]["response"]["body"]
    assert errors.node_error_lines(body["node_errors"]) == [
        "node 3 (SaveImage): Exception when validating node — '42'"
        " (node 42 does not exist in the workflow; node 3 links to it)"
    ]


def test_odd_rejection_bodies():
    exc = errors.validation_error({"error": "plain text"})
    assert str(exc) == "plain text" and exc.node_errors == {}
    exc = errors.validation_error({})
    assert str(exc) == "ComfyUI rejected the workflow" and exc.error["type"] == "unknown"


def test_execution_error_from_history():
    body = response_body("history_error")
    (prompt_id,) = body
    status = status_from_history(prompt_id, body)
    exc = errors.error_for_status(status)
    assert isinstance(exc, ComfyUIExecutionError)
    text = str(exc)
    first = text.split("\n")[0]
    assert first.startswith(f"ComfyUI prompt {prompt_id} failed in node 2 (ImageBlur): RuntimeError: ")
    assert "Padding size should be less" in first
    assert "Traceback (last frames on the server):" in text
    assert text.count('File "') <= errors.TRACEBACK_TAIL
    assert exc.prompt_id == prompt_id and exc.node_id == "2" and exc.node_type == "ImageBlur"
    assert exc.exception_type == "RuntimeError" and exc.traceback == status.failure["traceback"]


def test_interrupted_from_history():
    body = response_body("history_interrupted")
    (prompt_id,) = body
    exc = errors.error_for_status(status_from_history(prompt_id, body))
    assert isinstance(exc, ComfyUIInterruptedError) and not isinstance(exc, ComfyUIExecutionError)
    executed = body[prompt_id]["status"]["messages"][-1][1]["executed"]
    node_id = body[prompt_id]["status"]["messages"][-1][1]["node_id"]
    assert str(exc).startswith(
        f"ComfyUI prompt {prompt_id} was interrupted in node {node_id} (ImageBlur) after {len(executed)} node(s) ran."
    )
    assert "does not record who interrupted it" in str(exc)


def test_execution_error_without_details():
    text = errors.format_execution_error("p", {})
    assert text == "ComfyUI prompt p failed: Error"
    assert errors.format_interrupted("p", {}).startswith(
        "ComfyUI prompt p was interrupted after 0 node(s) ran."
    )


def test_no_error_for_success_or_active_states():
    for state in (PromptState.SUCCESS, PromptState.PENDING, PromptState.RUNNING, PromptState.NOT_FOUND):
        assert errors.error_for_status(PromptStatus("p", state)) is None


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (409, False),
        (429, True),
        (500, True),
        (503, True),
    ],
)
def test_retryable_statuses(status, retryable):
    assert errors.is_retryable_status(status) is retryable
    assert errors.is_retryable(errors.http_status_error("GET", "http://h/x", status)) is retryable


def test_retryable_exceptions():
    assert errors.is_retryable(errors.connection_error("GET", "http://h/x", "refused"))
    assert errors.is_retryable(errors.timeout_error("GET", "http://h/x", 5))
    assert not errors.is_retryable(ValueError("x"))
    assert not errors.is_retryable(errors.not_json_error("GET", "http://h/x", "text/html", "<html>"))


def test_http_status_error_messages():
    exc = errors.http_status_error("POST", "http://h:1/prompt", 401, "<html>\n<b>Unauthorized</b>\n</html>")
    assert isinstance(exc, ComfyUIAuthError) and exc.status_code == 401 and exc.url == "http://h:1/prompt"
    assert "\n" not in str(exc)
    assert str(exc).startswith(
        "ComfyUI POST http://h:1/prompt answered HTTP 401: the credentials were refused"
    )
    assert isinstance(errors.http_status_error("GET", "u", 403), ComfyUIAuthError)
    exc = errors.http_status_error("GET", "u", 404)
    assert type(exc) is ComfyUIHTTPError and "path prefix" in str(exc)
    assert "server error" in str(errors.http_status_error("GET", "u", 599))
    assert "unexpected status" in str(errors.http_status_error("GET", "u", 418))
    long = errors.http_status_error("GET", "u", 500, "x" * 5000)
    assert len(str(long)) < 400 and len(long.body_excerpt) == 500


@pytest.mark.parametrize(
    ("reason", "hint"),
    [
        ("[Errno 111] Connection refused", "is ComfyUI running, and are host and port right?"),
        ("Name or service not known", "the host name does not resolve"),
        ("Temporary failure in name resolution", "the host name does not resolve"),
        ("certificate verify failed", "TLS failed"),
        ("Connection reset by peer", "check that ComfyUI is running and reachable"),
    ],
)
def test_connection_error_hints(reason, hint):
    exc = errors.connection_error("GET", "http://h:1/queue", reason)
    assert isinstance(exc, ComfyUIConnectionError) and exc.url == "http://h:1/queue"
    assert hint in str(exc) and "http://h:1/queue" in str(exc) and "\n" not in str(exc)


def test_timeout_and_not_json_messages():
    exc = errors.timeout_error("GET", "http://h/object_info", 2.5)
    assert isinstance(exc, ComfyUITimeoutError) and "within 2.5 s" in str(exc)
    assert "within" not in str(errors.timeout_error("GET", "u", None))
    exc = errors.wait_timeout_error("p", "http://h", 30)
    assert "did not finish within 30 s" in str(exc)
    exc = errors.not_json_error("GET", "http://h/queue", "text/html", "<html>login</html>")
    assert isinstance(exc, ComfyUIResponseError) and "text/html where JSON was expected" in str(exc)
    exc = errors.not_json_error("GET", "u", "text/html", "<html>", received="an HTML page titled 'Login'")
    assert "answered an HTML page titled 'Login' where JSON was expected" in str(exc)
    assert "no content type" in str(errors.not_json_error("GET", "u", "", ""))


def test_value_not_in_list_of_a_model_file_says_it_is_not_installed():
    def body(value):
        return {
            "4": {
                "class_type": "CheckpointLoaderSimple",
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": f"ckpt_name: '{value}' not in []",
                        "extra_info": {"input_name": "ckpt_name", "received_value": value},
                    }
                ],
            }
        }

    [line] = errors.node_error_lines(body("sd_xl_base_1.0.safetensors"))
    assert line.endswith("(this model file is not installed on that ComfyUI server)")
    [line] = errors.node_error_lines(body("bilinear"))
    assert "not installed" not in line


def test_a_link_to_a_missing_node_behind_another_node_says_which_node_is_missing():
    """The inner variant: node 2 links to node 9 (absent); ComfyUI reports it while validating node 3."""
    from airflow_comfy.protocol.validation import validate_prompt
    from airflow_comfy.testing.catalog import recorded_object_info

    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["9", 0],
                "upscale_method": "bilinear",
                "width": 4,
                "height": 4,
                "crop": "disabled",
            },
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }
    result = validate_prompt(workflow, recorded_object_info())
    [line] = errors.node_error_lines(result.node_errors)
    assert line == (
        "node 2 (ImageScale): images: Exception when validating inner node — '9'"
        " (node 9 does not exist in the workflow; node 2 links to it)"
    )


def test_other_validation_exceptions_get_no_guessed_explanation():
    def line(details, exc_type):
        err = {
            "type": "exception_during_validation",
            "message": "Exception when validating node",
            "details": details,
            "extra_info": {"exception_type": exc_type},
        }
        return errors.node_error_lines({"2": {"class_type": "X", "errors": [err]}})[0]

    assert line("'class_type'", "KeyError").endswith("— 'class_type'")
    assert line("'9'", "ValueError").endswith("— '9'")
    assert line("boom", "RuntimeError").endswith("— boom")
