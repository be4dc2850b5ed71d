"""The access log set up in a logging config (the "todo.access" logger): its lines reach its
stream with its own formatter, written in batches. tests/test_observability.py has the rest."""

import io
import logging
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

import logs
from settings import Settings


@pytest.fixture(autouse=True)  # put back after the apps have stopped (and put theirs back)
def access_stream() -> Iterator[io.StringIO]:
    """The service's access logger as a logging config sets it up: one stream handler, not propagating."""
    logger = logging.getLogger(logs.ACCESS_LOGGER)
    saved = (logger.handlers, logger.propagate, logger.level)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("access %(message)s"))
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.INFO
    yield stream
    logger.handlers, logger.propagate, logger.level = saved


def test_access_lines_are_written_in_batches_and_all_of_them_at_shutdown(
    make_client: Callable[..., TestClient], settings: Settings, access_stream: io.StringIO
) -> None:
    client = make_client(settings)
    logger = logging.getLogger(logs.ACCESS_LOGGER)
    for n in range(3):
        logger.info("GET /line/%d 200", n)
    assert access_stream.getvalue() == ""  # kept for the next batch, not one write per line
    client.__exit__(None, None, None)
    assert access_stream.getvalue().splitlines() == [f"access GET /line/{n} 200" for n in range(3)]
    assert not any(isinstance(h, logs.BatchedHandler) for h in logger.handlers)  # put back as it was


def test_a_full_batch_is_written_at_once(
    make_client: Callable[..., TestClient], settings: Settings, access_stream: io.StringIO
) -> None:
    make_client(settings)
    logger = logging.getLogger(logs.ACCESS_LOGGER)
    for n in range(logs.BATCH):
        logger.info("line %d", n)
    assert len(access_stream.getvalue().splitlines()) == logs.BATCH
