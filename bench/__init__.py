"""Benchmarks of the request path: token checks, the revocation cache, SQL statements per route.

Run them with `make bench` (or `python -m bench`). Importing this package pins the environment
first, as the test suite does: `main` builds a module-level app from the environment at import,
and `Settings(_env_file=None)` still reads environment variables.
"""

import os

from settings import Settings
from testkit import TEST_SECRET as BENCH_SECRET

# Whatever the calling shell exports must not change the figures.
for _name in list(os.environ):
    if _name.lower() in Settings.model_fields:
        del os.environ[_name]
os.environ.update(
    BETTER_AUTH_SECRET=BENCH_SECRET,
    ENVIRONMENT="test",
    DATABASE_URL="sqlite://",
    # The test client logs every request at INFO: keep the output to the figures.
    LOG_LEVEL="WARNING",
)
# The local JWKS server must be reached directly, never through a configured proxy.
_no_proxy = ",".join(
    value for value in (os.environ.get("no_proxy"), os.environ.get("NO_PROXY"), "127.0.0.1") if value
)
os.environ["no_proxy"] = os.environ["NO_PROXY"] = _no_proxy
