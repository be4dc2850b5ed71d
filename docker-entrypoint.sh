#!/bin/sh
# The container's entry step. In production the app does not migrate at start-up, so the
# schema is brought up to date here first; replicas starting together take turns on
# PostgreSQL's advisory lock. A failed migration stops the container before it serves.
set -eu

alembic upgrade head

# Several workers report their metrics through files in this directory; those of an earlier
# run would be added in, so it starts empty (emptied, not removed: it may be a mount).
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
    find "$PROMETHEUS_MULTIPROC_DIR" -mindepth 1 -delete
fi

# exec: uvicorn takes this shell's place, so the SIGTERM of `docker stop` reaches it directly
# and it shuts down gracefully, instead of a shell that would not pass the signal on.
exec "$@"
