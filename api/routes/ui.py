"""The dashboard: one HTML page and its script and style, shipped in the package (no CDN).
They hold no data and are served without a token; the page asks for one when the API does."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)
assets = StaticFiles(directory=UI_DIR)


@router.get("/")
def dashboard() -> FileResponse:
    return FileResponse(UI_DIR / "index.html", headers=SECURITY_HEADERS)
