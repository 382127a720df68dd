"""Validating an API-format workflow the way ComfyUI 0.3.64's POST /prompt does, from /object_info alone.

Mirrors ``execution.validate_prompt`` / ``validate_inputs``: the same checks in the same order, the
same error ``type``/``message``/``details``/``extra_info`` texts, the same ``dependent_outputs``
bookkeeping, and the same rule that a node downstream of a broken node is reported invalid
without errors of its own. Used by the stand-in server (to answer POST /prompt) and by the
package's pre-submit check (a workflow checked locally against a server's /object_info).

Differences that cannot be avoided without the server's Python classes: checks that need files
(``LoadImage`` of a missing file) run only through ``custom_validators``; without one, inputs that
ComfyUI hands to a node's own ``VALIDATE_INPUTS`` (see :data:`SELF_VALIDATED_INPUTS`) are not
checked. Tracebacks of ``exception_during_validation`` are ours, not the server's.

Invariant: pure and deterministic — no I/O except what a caller's custom validator does, and the
caller's ``prompt`` is never modified (coerced values live in ``ValidationResult.prompt``).
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Inputs that ComfyUI checks with the node's own VALIDATE_INPUTS instead of min/max/list checks.
SELF_VALIDATED_INPUTS: dict[str, tuple[str, ...]] = {
    "LoadImage": ("image",),
    "LoadImageMask": ("image",),
    "LoadLatent": ("latent",),
}


@dataclass(frozen=True)
class CustomValidator:
    """A node's own validation (ComfyUI's ``VALIDATE_INPUTS``).

    ``check`` receives the node's values for ``inputs`` and returns ``True`` when valid, or
    ``False``/a message when not; each named input then gets a ``custom_validation_failed`` error.
    """

    inputs: tuple[str, ...]
    check: Callable[[Mapping[str, Any]], bool | str]


@dataclass
class ValidationResult:
    """The outcome: ``ok`` with the outputs to run, or the ``error``/``node_errors`` of a 400 body."""

    ok: bool
    error: dict[str, Any] | None
    good_outputs: list[str]
    node_errors: dict[str, Any]
    prompt: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The JSON body POST /prompt answers with status 400 when ``ok`` is false."""
        return {"error": self.error, "node_errors": self.node_errors}


def _error(
    type_: str, message: str, details: str, extra_info: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"type": type_, "message": message, "details": details, "extra_info": extra_info or {}}


def _exception_type(exc: BaseException) -> str:
    module = type(exc).__module__
    return type(exc).__qualname__ if module == "builtins" else f"{module}.{type(exc).__qualname__}"


def types_compatible(received_type: Any, input_type: Any) -> bool:
    """ComfyUI's ``validate_node_input`` (non-strict): equal, ``*``, or overlapping comma lists."""
    if received_type == input_type or "*" in (received_type, input_type):
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received = {t.strip() for t in received_type.split(",")}
    wanted = {t.strip() for t in input_type.split(",")}
    return bool(received & wanted)


def input_spec(node_info: Mapping[str, Any], name: str) -> tuple[Any, str, dict[str, Any]] | None:
    """``(input_type, category, extra_info)`` of one input, like ComfyUI's ``get_input_info``."""
    inputs = node_info.get("input") or {}
    for category in ("required", "optional", "hidden"):
        section = inputs.get(category) or {}
        if name in section:
            spec = section[name]
            if isinstance(spec, str):  # hidden inputs are plain strings
                return spec, category, {}
            extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            return spec[0], category, extra
    return None


def _input_names(node_info: Mapping[str, Any]) -> list[str]:
    """Required then optional input names in ``input_order`` (falling back to dict order)."""
    order = node_info.get("input_order") or {}
    inputs = node_info.get("input") or {}
    names: list[str] = []
    for category in ("required", "optional"):
        section = list(order.get(category) or (inputs.get(category) or {}).keys())
        names.extend(n for n in section if n not in names)
    return names


def _combo_options(input_type: Any, extra: Mapping[str, Any], check_v3_combos: bool) -> list[Any] | None:
    if isinstance(input_type, list):
        return input_type
    if check_v3_combos and input_type == "COMBO" and isinstance(extra.get("options"), list):
        return extra["options"]
    return None


class _Validator:
    def __init__(
        self,
        prompt: dict[str, Any],
        object_info: Mapping[str, Any],
        custom_validators: Mapping[str, CustomValidator],
        check_v3_combos: bool,
    ) -> None:
        self.prompt = prompt
        self.object_info = object_info
        self.custom = custom_validators
        self.check_v3_combos = check_v3_combos
        self.validated: dict[str, tuple[bool, list[dict[str, Any]], str]] = {}

    def validate_inputs(self, node_id: str) -> tuple[bool, list[dict[str, Any]], str]:
        if node_id in self.validated:
            return self.validated[node_id]
        node = self.prompt[node_id]
        inputs = node["inputs"]
        class_type = node["class_type"]
        info = self.object_info[class_type]
        custom = self.custom.get(class_type)
        self_checked = set(custom.inputs if custom else SELF_VALIDATED_INPUTS.get(class_type, ()))
        errors: list[dict[str, Any]] = []
        valid = True
        for name in _input_names(info):
            input_type, category, extra = input_spec(info, name) or (None, "optional", {})
            if name not in inputs:
                if category == "required":
                    errors.append(
                        _error(
                            "required_input_missing", "Required input is missing", name, {"input_name": name}
                        )
                    )
                continue
            val = inputs[name]
            config = [input_type, extra]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(
                        _error(
                            "bad_linked_input",
                            "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            name,
                            {"input_name": name, "input_config": config, "received_value": val},
                        )
                    )
                    continue
                source_id = val[0]
                source_class = self.prompt[source_id]["class_type"]
                received_type = tuple(self.object_info[source_class].get("output") or ())[val[1]]
                if not types_compatible(received_type, input_type):
                    errors.append(
                        _error(
                            "return_type_mismatch",
                            "Return type mismatch between linked nodes",
                            f"{name}, received_type({received_type}) mismatch input_type({input_type})",
                            {
                                "input_name": name,
                                "input_config": config,
                                "received_type": received_type,
                                "linked_node": val,
                            },
                        )
                    )
                    continue
                try:
                    upstream = self.validate_inputs(source_id)
                    if upstream[0] is False:
                        valid = False
                except Exception as exc:
                    valid = False
                    self.validated[source_id] = (
                        False,
                        [
                            _error(
                                "exception_during_inner_validation",
                                "Exception when validating inner node",
                                str(exc),
                                {
                                    "input_name": name,
                                    "input_config": config,
                                    "exception_message": str(exc),
                                    "exception_type": _exception_type(exc),
                                    "traceback": traceback.format_tb(exc.__traceback__),
                                    "linked_node": val,
                                },
                            )
                        ],
                        source_id,
                    )
                continue
            problem, val = self._check_value(name, val, input_type, extra, config, name in self_checked)
            inputs[name] = val
            if problem:
                errors.append(problem)
        if custom is not None:
            verdict = custom.check({n: inputs.get(n) for n in custom.inputs})
            if verdict is not True:
                for name in custom.inputs:
                    details = name if verdict is False else f"{name} - {verdict}"
                    errors.append(
                        _error(
                            "custom_validation_failed",
                            "Custom validation failed for node",
                            details,
                            {"input_name": name},
                        )
                    )
        result = (False, errors, node_id) if errors or not valid else (True, [], node_id)
        self.validated[node_id] = result
        return result

    def _check_value(
        self, name: str, val: Any, input_type: Any, extra: Mapping[str, Any], config: list[Any], skip: bool
    ) -> tuple[dict[str, Any] | None, Any]:
        if isinstance(val, dict) and "__value__" in val:
            val = val["__value__"]
        try:
            if input_type == "INT":
                val = int(val)
            elif input_type == "FLOAT":
                val = float(val)
            elif input_type == "STRING":
                val = str(val)
            elif input_type == "BOOLEAN":
                val = bool(val)
        except Exception as exc:
            return (
                _error(
                    "invalid_input_type",
                    f"Failed to convert an input value to a {input_type} value",
                    f"{name}, {val}, {exc}",
                    {
                        "input_name": name,
                        "input_config": config,
                        "received_value": val,
                        "exception_message": str(exc),
                    },
                ),
                val,
            )
        if skip:
            return None, val
        extra_info = {"input_name": name, "input_config": config, "received_value": val}
        if "min" in extra and val < extra["min"]:
            msg = f"Value {val} smaller than min of {extra['min']}"
            return _error("value_smaller_than_min", msg, name, extra_info), val
        if "max" in extra and val > extra["max"]:
            msg = f"Value {val} bigger than max of {extra['max']}"
            return _error("value_bigger_than_max", msg, name, extra_info), val
        options = _combo_options(input_type, extra, self.check_v3_combos)
        if options is not None and val not in options:
            list_info: str = str(options)
            if len(options) > 20:
                list_info, extra_info["input_config"] = f"(list of length {len(options)})", None
            return _error(
                "value_not_in_list", "Value not in list", f"{name}: '{val}' not in {list_info}", extra_info
            ), val
        return None, val


def validate_prompt(
    prompt: Any,
    object_info: Mapping[str, Any],
    *,
    custom_validators: Mapping[str, CustomValidator] | None = None,
    partial_execution_targets: list[str] | None = None,
    check_v3_combos: bool = True,
) -> ValidationResult:
    """Validate ``prompt`` (API format) against ``object_info`` (the GET /object_info body).

    Raises ``TypeError``/``AttributeError`` for a prompt that is not a mapping of node objects,
    where ComfyUI answers 500. ``check_v3_combos`` also checks V3 ``["COMBO", {"options": [...]}]``
    values, which ComfyUI 0.3.64 accepts unchecked (newer servers check them); the stand-in
    passes ``False`` to behave like 0.3.64.
    """
    prompt = copy.deepcopy(prompt)
    outputs: list[str] = []
    for node_id in prompt:
        node = prompt[node_id]
        if "class_type" not in node:
            error = _error(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.",
                f"Node ID '#{node_id}'",
            )
            return ValidationResult(False, error, [], {}, prompt)
        class_type = node["class_type"]
        info = object_info.get(class_type)
        if info is None:
            error = _error(
                "invalid_prompt",
                f"Cannot execute because node {class_type} does not exist.",
                f"Node ID '#{node_id}'",
            )
            return ValidationResult(False, error, [], {}, prompt)
        if info.get("output_node") is True and (
            partial_execution_targets is None or node_id in partial_execution_targets
        ):
            outputs.append(node_id)
    if not outputs:
        return ValidationResult(
            False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [], {}, prompt
        )

    checker = _Validator(prompt, object_info, custom_validators or {}, check_v3_combos)
    good_outputs: list[str] = []
    failures: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    for output_id in outputs:
        try:
            valid, reasons, _ = checker.validate_inputs(output_id)
        except Exception as exc:
            valid = False
            reasons = [
                _error(
                    "exception_during_validation",
                    "Exception when validating node",
                    str(exc),
                    {
                        "exception_type": _exception_type(exc),
                        "traceback": traceback.format_tb(exc.__traceback__),
                    },
                )
            ]
            checker.validated[output_id] = (False, reasons, output_id)
        if valid:
            good_outputs.append(output_id)
            continue
        failures.append((output_id, reasons))
        for node_id, (node_valid, node_reasons, _) in checker.validated.items():
            if node_valid or not node_reasons:
                continue
            entry = node_errors.setdefault(
                node_id,
                {
                    "errors": node_reasons,
                    "dependent_outputs": [],
                    "class_type": prompt[node_id]["class_type"],
                },
            )
            entry["dependent_outputs"].append(output_id)
    if not good_outputs:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errors in failures for e in errors)
        error = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
        return ValidationResult(False, error, [], node_errors, prompt)
    return ValidationResult(True, None, good_outputs, node_errors, prompt)


__all__ = [
    "SELF_VALIDATED_INPUTS",
    "CustomValidator",
    "ValidationResult",
    "input_spec",
    "types_compatible",
    "validate_prompt",
]
