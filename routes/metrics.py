"""GET /metrics: the Prometheus metrics (metrics.py), mounted with METRICS_ENABLED.

No user token and no per-user rate limit: a scraper is no user. With METRICS_TOKEN set it must
send `Authorization: Bearer <METRICS_TOKEN>`; a request without it, or with another, is a 401
counted against its address's limit for requests without a valid token, like a bad user token.
Left out of the OpenAPI document: it is for the operator's Prometheus, not for API clients.
"""

import hmac

from fastapi import APIRouter, Request, Response, status

from dependencies import services, unauthorized

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    found = services(request)
    assert found.metrics is not None, "mounted only with metrics enabled"
    token = found.settings.metrics_token
    if token is not None:
        sent = request.headers.get("authorization", "")
        scheme, _, value = sent.partition(" ")
        expected = token.get_secret_value().strip().encode()
        # In constant time: how long the comparison takes must not tell how much of it matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), expected):
            await found.limits.unauthenticated(request)
            raise unauthorized("Send 'Authorization: Bearer <METRICS_TOKEN>'")
    body, content_type = found.metrics.exposition(request.headers.get("accept"))
    return Response(body, status_code=status.HTTP_200_OK, media_type=content_type)
