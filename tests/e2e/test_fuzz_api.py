"""Schemathesis against the served OpenAPI document, signed in with a real token: whatever it
generates, no operation answers a 5xx or a status its document does not list.

`ET_FUZZ_CASES` sets the cases per operation: a short leg by default (in `make test`); `make
fuzz` runs 700 per operation (over 20,000 in all). The streams (`/live`, `/alerts/stream`) are
left out: they answer 200 and then never end, which no generated case can judge.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, status_code_conformance

from tests.processes import ServiceProcess, running_up

CASES = int(os.environ.get("ET_FUZZ_CASES", "15"))
# The short leg of `make test` draws the same cases every run, so a red CI names a change, not
# a lucky draw; `make fuzz` (ET_FUZZ_CASES set) explores afresh each time.
DERANDOMIZE = "ET_FUZZ_CASES" not in os.environ
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    # A token that outlives the run (`make fuzz` takes half an hour): with the default 15
    # minutes every later case was an expired token's 401, which most operations document.
    with running_up(
        tmp,
        ET_RATE_LIMITS="off",
        ET_JWT_SECRET="fuzz-secret-0123456789-0123456789",
        ET_ACCESS_TOKEN_TTL_S="86400",
    ) as p:
        yield p


@pytest.fixture(scope="module")
def auth(server: ServiceProcess) -> dict[str, str]:
    api = server.url + "/api/v1"
    body = {"email": "fuzz@example.com", "password": PASSWORD}
    assert httpx.post(api + "/auth/register", json=body, timeout=30).status_code == 201
    token = httpx.post(api + "/auth/login", json=body, timeout=30).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    # Something to find: a device of the caller's (its id is in no generated case, but the
    # list routes then answer with items).
    r = httpx.post(api + "/devices", headers=headers, json={"name": "m", "type": "meter"})
    assert r.status_code == 201, r.text
    return headers


def test_no_server_error_and_no_undocumented_status(
    server: ServiceProcess, auth: dict[str, str]
) -> None:
    api_schema = schemathesis.openapi.from_url(server.url + "/openapi.json").exclude(
        path_regex=r"/(live|stream)$"
    )
    failures: list[str] = []
    cases = operations = 0
    began = time.monotonic()
    for result in api_schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema fails here

        @given(case=operation.as_strategy())
        @settings(
            max_examples=CASES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=DERANDOMIZE,
        )
        def run(case: schemathesis.Case) -> None:
            nonlocal cases
            cases += 1
            case.call_and_validate(
                base_url=server.url,
                headers={**auth, **dict(case.headers or {})},
                checks=[not_a_server_error, status_code_conformance],
                timeout=30,
            )

        operations += 1
        try:
            run()
        except Exception as exc:  # one operation's failure must not hide the others'
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:2000])
    # The figures the README quotes (`make fuzz` shows them: it runs pytest with -s).
    took = time.monotonic() - began
    print(f"\nfuzz: {cases} cases, {operations} operations, {len(failures)} failing, {took:.0f} s")
    assert not failures, "\n\n".join(failures)
    assert cases >= CASES * 20  # every operation was exercised
