"""The guard's scan itself: it finds credentials, whole or cut, wherever they are put (so a clean scan
in the other scenarios means something)."""

from __future__ import annotations

import logging

from resilience.support import BASIC_CREDENTIAL, PASSWORD, SECRETS, TOKEN, exception_texts, find_secrets


def test_scan_finds_whole_and_cut_secrets() -> None:
    assert find_secrets([f"Authorization: Basic {BASIC_CREDENTIAL[:30]}"]) == [BASIC_CREDENTIAL]
    assert find_secrets([f"token={TOKEN}"]) == [TOKEN]
    assert find_secrets(["Authorization: Basic ***", "X-API-Key: ***"]) == []


def test_scan_looks_into_exception_chains_and_attributes() -> None:
    class WithBody(Exception):
        def __init__(self) -> None:
            super().__init__("harmless")
            self.body_excerpt = PASSWORD

    try:
        try:
            raise WithBody
        except WithBody as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as outer:
        assert find_secrets(exception_texts(outer)) == [PASSWORD]


def test_scan_sees_log_records(caplog: object) -> None:
    logging.getLogger("resilience.selftest").warning("sending %s", SECRETS[2])
    records = caplog.records  # type: ignore[attr-defined]
    assert find_secrets(r.getMessage() for r in records) == [SECRETS[2]]
    records.clear()  # the autouse guard must not fail this test for the planted secret
