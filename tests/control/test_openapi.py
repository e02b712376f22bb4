"""schemathesis against /openapi.json of a live server, on SQLite and PostgreSQL: valid and
invalid requests for every operation, not one 5xx answer, and every answer as the document
describes it (status, content type, body, headers; 405 and OPTIONS with `Allow`); and the
answers schemathesis does not try: malformed JSON, OPTIONS and 405 on every path."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis import checks
from schemathesis.core.parameters import ParameterLocation

from control.conftest import MIB, openapi_document
from control.fakes import Fleet
from control.livesrv import LiveServer
from corral.api.errors import InvalidRequest
from corral.control.settings import Settings

MAX_EXAMPLES = 40


SIGNATURE = "aleph-allocation-token"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, allocation_token_hash=hashlib.sha256(SIGNATURE.encode()).hexdigest())


@pytest.fixture
def token(live: LiveServer) -> str:
    return live.token()


@pytest.fixture
def state(live: LiveServer, fleet: Fleet, token: str, tmp_path: Path) -> None:
    """Something for the generated requests to run into: an up host, a pool, an object, a VM."""
    client = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {token}"})
    fleet.add("10.0.0.1", 7000)
    host = client.post("/hosts", json={"name": "h1", "address": "10.0.0.1", "port": 7000}).json()
    client.post(f"/hosts/{host['id']}/init").raise_for_status()
    pool = client.post(
        "/storage-pools",
        json={"name": "p", "pool_type": "local", "config": {"path": f"{tmp_path}/p"}},
    ).json()
    client.post(
        "/storage-objects",
        json={"name": "k", "storage_pool_id": pool["id"], "object_type": "kernel",
              "config": {"path": f"{tmp_path}/p/vmlinuz"}},
    ).raise_for_status()  # fmt: skip
    client.post(
        "/vms", json={"name": "v", "memory_size": 128 * MIB, "image": "t"}
    ).raise_for_status()


# /events is an endless stream.
schema = schemathesis.openapi.from_dict(openapi_document()).exclude(path="/events")
# Unknown query parameters are ignored (as most APIs do): not generated as "invalid" requests.
# The token is the test's to give (or not), not a generated header.
schema.config.generation.update(
    modes=["positive", "negative"],
    max_examples=MAX_EXAMPLES,
    allow_extra_parameters=False,
    with_security_parameters=False,
)


@schema.parametrize()
@hypothesis_settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_answers_match_the_document(case: Any, live: LiveServer, token: str, state: None) -> None:
    """Every check of schemathesis but positive_data_acceptance: a request of the right shape
    may still break a business rule (an unknown pool, no room), a 422 that names it."""
    excluded = [checks.positive_data_acceptance]
    if _negative_only_in_the_query(case):
        excluded.append(checks.negative_data_rejection)
    case.call_and_validate(
        base_url=live.url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        excluded_checks=excluded,
    )
    anonymous = case.call(base_url=live.url, headers={"Authorization": ""}, timeout=30)
    assert anonymous.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {anonymous.status_code}: {anonymous.text[:500]}"
    )


def _negative_only_in_the_query(case: Any) -> bool:
    """Whether the only invalid part of a "negative" case is its query string. There,
    schemathesis's invalid values mostly reach the server as valid text (false or 0 where a
    string goes, `tags=` for an empty list, a parameter repeated: Starlette takes the last),
    so its verdict is noise; bodies, paths and headers stay checked."""
    if case.meta is None:
        return False
    negative = {where for where, part in case.meta.components.items() if part.mode.is_negative}
    return negative == {ParameterLocation.QUERY}


DOCUMENT = openapi_document()
OPERATIONS = [(m.upper(), p, op) for p, ops in DOCUMENT["paths"].items() for m, op in ops.items()]
WITH_BODY = [(m, p) for m, p, op in OPERATIONS if "requestBody" in op]


def _fill(template: str) -> str:
    return re.sub(r"\{\w+\}", "00000000-0000-0000-0000-000000000000", template)


def test_every_operation_documents_its_errors() -> None:
    for method, path, op in OPERATIONS:
        assert "413" in op["responses"], (method, path)
        if path != "/health":
            assert {"401", "422"} <= op["responses"].keys(), (method, path)


@pytest.mark.parametrize(("method", "path"), WITH_BODY, ids=[f"{m} {p}" for m, p in WITH_BODY])
def test_malformed_json_is_the_documented_422(
    live: LiveServer, token: str, method: str, path: str
) -> None:
    """Issue #11: a body that is not JSON (or not UTF-8) got an undocumented 400."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if path == "/control/allocations":
        headers = {"X-Auth-Signature": SIGNATURE, "Content-Type": "application/json"}
    for body in (b"{", b'{"name": ', b"\xff\xfe{}", b"[1, 2", b"nul"):
        response = httpx.request(method, live.url + _fill(path), content=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
        InvalidRequest.model_validate(response.json())  # the documented shape


@pytest.mark.parametrize("path", list(DOCUMENT["paths"]))
def test_options_and_405_answers_name_the_documented_methods(
    live: LiveServer, token: str, path: str
) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    documented = {m.upper() for m in DOCUMENT["paths"][path]} | {"OPTIONS"}
    response = httpx.options(live.url + _fill(path), headers=auth)
    assert response.status_code == 204
    assert set(response.headers["allow"].split(", ")) == documented
    undocumented = next(m for m in ("PUT", "PATCH", "DELETE", "POST") if m not in documented)
    response = httpx.request(undocumented, live.url + _fill(path), headers=auth)
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == documented
