"""Property-based API fuzzing from the OpenAPI schema: no 5xx, and every response matches the schema.

Each operation is fuzzed with schemathesis' Hypothesis strategies (positive and negative inputs), once
with a valid bearer token and once without one.
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.main import create_app
from matchsvc.runtime import Runtime
from tests.support.accounts import auth_headers

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.slow
@pytest.mark.parametrize("authenticated", [True, False], ids=["bearer", "anonymous"])
def test_api_never_errors_and_conforms(client: TestClient, db: Runtime, authenticated: bool) -> None:
    headers = auth_headers(client) if authenticated else {}
    client.get("/v1/faces/next", params={"n": 3}, headers=headers)  # give the fuzzer faces to find
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(db))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8

    for operation in operations:

        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        @given(case=strategy)
        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.explicit, Phase.generate],  # report the first failure unshrunk: keeps CI bounded
        )
        def fuzz(case) -> None:
            if authenticated:
                case.headers = {**(case.headers or {}), **headers}
            case.call_and_validate(checks=CHECKS)

        fuzz()
