"""Liveness and readiness probes; no token needed."""

from fastapi import APIRouter, HTTPException, status
from sqlmodel import Session

from db import is_outage
from dependencies import DatabaseDep
from schemas import ErrorDetail

router = APIRouter(prefix="/health", tags=["health"])


@router.get("", summary="The process is alive")
def alive() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="The database is reachable",
    responses={503: {"model": ErrorDetail, "description": "The database cannot be reached"}},
)
async def ready(db: DatabaseDep) -> dict[str, str]:
    try:
        # Within READY_SECONDS whatever the database does (down, restarting, frozen): a probe
        # that hangs tells an orchestrator nothing.
        await db.run_within(min(READY_SECONDS, db.deadline), ping)
    except Exception as error:
        if not is_outage(error):
            raise
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "Database unavailable",
            headers={"Retry-After": "5"},
        ) from None
    return {"status": "ok", "database": "ok"}


READY_SECONDS = 1.5


def ping(session: Session) -> None:
    session.connection().exec_driver_sql("SELECT 1")


# HEAD too, for load balancers that probe with it (undocumented twins of the GETs above).
router.add_api_route("", alive, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/ready", ready, methods=["HEAD"], include_in_schema=False)
