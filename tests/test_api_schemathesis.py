"""Schemathesis against the OpenAPI spec, in process over ASGI, with a real database.

Every operation is called with generated data by an admin (so writes go
through too); no answer may be a server error, every answer must match the
documented status codes, media types, headers and schemas, and schema-violating
requests must be rejected. The example count is small to keep the suite fast;
raise ``EXAMPLES`` locally for a deeper run.

Left to other tests, on purpose:
- authentication: the spec given to schemathesis has no security schemes, and
  every request carries the admin token; tests/test_api_access.py tries every
  role, no token and a revoked token on every route;
- ``positive_data_acceptance``: some rules span several fields (thresholds,
  calendars, a period's order and length, a key's decoded size) and cannot be
  written in JSON Schema, so a schema-valid request may rightly get a 422;
- ``allow_header_conformance``: a 405's ``Allow`` lists the methods of the
  first route matching the path (FastAPI routes each method separately).

Schemathesis generates and validates; the requests go through Starlette's
httpx-based ``TestClient`` (which runs the app's lifespan), because
schemathesis' own requests transport breaks when ``urllib3-future`` (pulled
in by grafana-client) shadows ``urllib3`` in the same environment.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks
from starlette.testclient import TestClient

from api.auth import Role
from api.main import create_app
from api.settings import ApiSettings
from tests.api_support import issue_token
from tests.test_api_usage import load

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase

EXAMPLES = 8

EXCLUDED = [checks.positive_data_acceptance, checks.allow_header_conformance]


def _spec_without_security() -> dict[str, Any]:
    """The app's spec (which no setting changes), minus its security requirements."""
    spec = copy.deepcopy(
        create_app(ApiSettings(database_url="postgresql://unused@127.0.0.1:1/unused")).openapi()
    )
    spec["components"].pop("securitySchemes", None)
    for operations in spec["paths"].values():
        for operation in operations.values():
            operation.pop("security", None)
    return spec


_spec_app = create_app(ApiSettings(database_url="postgresql://unused@127.0.0.1:1/unused"))
schema = schemathesis.openapi.from_dict(_spec_without_security())
schema.app = _spec_app  # selects the in-process transport; this app is never started


@pytest.fixture(scope="module")
def client(make_database: MakeDatabase) -> Iterator[TestClient]:
    with make_database("test_schemathesis") as url:
        load(url)
        token = issue_token(url, Role.ADMIN)
        app = create_app(ApiSettings(database_url=url, pool_timeout_s=2))
        with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as api:
            yield api


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors_and_answers_match_the_spec(
    case: schemathesis.Case[Any], client: TestClient
) -> None:
    request: dict[str, Any] = case.as_transport_kwargs(base_url=str(client.base_url))
    if request.pop("cookies", None):
        pytest.fail("the API documents no cookie parameters")
    body = request.pop("data", None)
    if isinstance(body, str | bytes):
        request["content"] = body
    elif body is not None:
        request["data"] = body
    headers = {**client.headers, **(request.pop("headers", None) or {})}
    response = client.request(**request, headers=headers)
    assert response.status_code < 500, response.text
    case.validate_response(
        response, headers=headers, transport_kwargs=request, excluded_checks=EXCLUDED
    )
