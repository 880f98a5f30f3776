"""The dashboard at `/`: one static page (no build step, no CDN, works offline) that reads the same
JSON endpoints as any client: `/health`, `/v1/jobs`, `/v1/jobs/{id}/audio`, `POST /v1/jobs`."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)
PAGE = Path(__file__).parent / "static" / "index.html"
# Another site must not frame the page and trick a click on Cancel or Queue job.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
}


@router.get("/")
async def page() -> FileResponse:
    """The dashboard page."""
    return FileResponse(PAGE, media_type="text/html", headers=PAGE_HEADERS)
