"""The TypeScript client's OpenAPI input (clients/typescript/openapi.json) is the service's own
document: after a change to the API, `make types` writes it again and regenerates the types
(whose match with this file the client's own `npm test` checks)."""

from pathlib import Path

from testkit import openapi

COMMITTED = Path(__file__).resolve().parent.parent / "clients" / "typescript" / "openapi.json"


def test_the_clients_openapi_document_is_up_to_date() -> None:
    assert COMMITTED.exists(), f"{COMMITTED} is missing: run `make types`"
    assert openapi.text() == COMMITTED.read_text(encoding="utf-8"), (
        "clients/typescript/openapi.json is not the service's OpenAPI document any more: run "
        "`make types` (it rewrites openapi.json and src/schema.ts) and commit both"
    )
