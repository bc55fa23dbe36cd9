from __future__ import annotations

from litestar import Response, get
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailgate_api.deps import Resources


@get(["/health", "/health/ready"], tags=["Health"], summary="Ready when database and broker answer")
async def ready(res: Resources) -> Response[dict[str, object]]:
    db_ok = await res.db.ping()
    bus_ok = res.bus.connected
    ok = db_ok and bus_ok
    return Response(
        {"success": ok, "database": db_ok, "broker": bus_ok},
        status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE,
    )


@get("/health/live", tags=["Health"], summary="The process is alive")
async def live() -> dict[str, bool]:
    return {"success": True}


@get("/metrics", tags=["Health"], summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> Response[bytes]:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
