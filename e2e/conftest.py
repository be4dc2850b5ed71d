"""The end-to-end tests (`make test-e2e`): the service as `make run` starts it, in a process of
its own, reached over real HTTP by a browser and a schema fuzzer."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit import sign
from testkit.server import RunningServer, make_run

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One `make run` for the whole run, on a fresh SQLite file."""
    with make_run(tmp_path_factory.mktemp("e2e-server")) as running:
        yield running


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots and reports are kept after the run (`artifacts/`, not committed)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def token_for(server: RunningServer, user_id: str) -> str:
    """A frontend's HS256 token for `user_id`, signed with the server's secret."""
    return sign({"sub": user_id}, secret=server.secret, lifetime=3600)
