"""Schemathesis against the live management API: every operation of `/api/openapi.json`, with
generated requests (valid and invalid ones), must answer without a server error and with what
the document declares (status, content type, body schema).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from metahub.server.api import create_api
from tests.support.metahub_server import MetaHubServer

ADMIN_TOKEN = "admin-token-for-schemathesis"
MAX_EXAMPLES = 12  # per operation: the whole run stays well under half a minute


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_layout: Path) -> Iterator[MetaHubServer]:
    workdir = tmp_path_factory.mktemp("schemathesis")
    config = {
        "upstream": {"path": str(demo_layout)},
        "machine_types": [
            {"name": "config-type", "login": "config-login", "password": "pw"},
        ],
        "admin": {"tokens": [ADMIN_TOKEN]},
        # Generated requests include bad tokens; they must not lock the test client out.
        "login_limit": {"failures": 1000000},
    }
    with MetaHubServer(workdir, config) as running:
        # Something to find, so that generated ids and names sometimes hit real rows.
        with httpx.Client(
            base_url=running.url + "/api/v1",
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as api:
            assert api.post("/machine-types", json={"name": "db-type"}).status_code == 201
            assert api.post("/machine-types/db-type/credentials", json={}).status_code == 201
            admin = {"login": "ops", "password": "a long password"}
            assert api.post("/admins", json=admin).status_code == 201
            assert api.post("/admins/ops/tokens", json={}).status_code == 201
        yield running


@pytest.fixture(scope="module")
def api_schema(server: MetaHubServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.url}/api/openapi.json")


def operations() -> list[tuple[str, str]]:
    """Every operation the API declares, read from the same app, to name one test each."""
    document = create_api(lambda: None).openapi()  # type: ignore[arg-type, return-value]
    return [(method.upper(), path) for path, ops in document["paths"].items() for method in ops]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), operations())
def test_api_conforms_to_its_openapi_document(
    api_schema: schemathesis.BaseSchema,
    server: MetaHubServer,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=f"{server.url}/api",
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )

    check()


def test_the_document_declares_auth_and_error_shapes(server: MetaHubServer) -> None:
    spec = httpx.get(f"{server.url}/api/openapi.json").json()
    assert spec["components"]["securitySchemes"]["adminToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["adminToken"]["description"],
    }
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation["security"] == [{"adminToken": []}], (method, path)
            responses = operation["responses"]
            for status in ("401", "422", "429"):
                assert responses[status]["content"]["application/json"]["schema"] == error
            success = [s for s in responses if s.startswith("2")]
            assert len(success) == 1, (method, path)
            if success != ["204"]:
                content = responses[success[0]]["content"]
                # JSON, or JSON lines for an answer streamed as the work goes (warming).
                media = "application/x-ndjson" if path == "/v1/warm" else "application/json"
                assert list(content) == [media], (method, path)
                schema = content[media]["schema"]
                assert schema != {} and schema.get("type") != "object", (method, path)
