"""The service's OpenAPI document as `/openapi.json` serves it with the default settings:
`python -m testkit.openapi` prints it (the TypeScript client's types are generated from it)."""

import json
from typing import Any

from main import create_app
from testkit import base_settings


def document() -> dict[str, Any]:
    return create_app(base_settings("sqlite://")).openapi()


def text() -> str:
    """The document as committed in clients/typescript/openapi.json."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(text(), end="")
