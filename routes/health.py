"""Liveness and readiness probes; no token needed."""

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import text

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
def ready(db: DatabaseDep) -> dict[str, str]:
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "Database unavailable",
            headers={"Retry-After": "5"},
        ) from None
    return {"status": "ok", "database": "ok"}


# HEAD too, for load balancers that probe with it (undocumented twins of the GETs above).
router.add_api_route("", alive, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/ready", ready, methods=["HEAD"], include_in_schema=False)
