"""The web dashboard on /ui: sign-in, hosts, VMs (live), VM detail with its serial console and
recent events, create VM, the hosts' images, storage, jobs, events (kept, then live) and tokens.
Mounted by corral.api.app as its own small app, so it is not part of the API's OpenAPI document
and has its own error pages."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from corral.api.ui import live, pages
from corral.api.ui.sessions import Sessions
from corral.api.ui.web import HERE, SecurityHeaders, SignInNeeded, is_htmx, render
from corral.control.plane import ControlPlane
from corral.errors import CorralError
from corral.wire import status_of

PREFIX = "/ui"


def create_ui(plane: ControlPlane) -> FastAPI:
    ui = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    ui.state.plane = plane
    ui.state.sessions = Sessions()
    ui.include_router(pages.router)
    ui.include_router(live.router)
    ui.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    ui.add_middleware(SecurityHeaders)

    @ui.exception_handler(SignInNeeded)
    async def sign_in(request: Request, exc: SignInNeeded) -> Response:
        if is_htmx(request):
            return Response(status_code=401, headers={"HX-Redirect": f"{PREFIX}/login"})
        return RedirectResponse(f"{PREFIX}/login", status_code=303)

    @ui.exception_handler(CorralError)
    async def corral_error(request: Request, exc: CorralError) -> HTMLResponse:
        status = status_of(exc)
        if is_htmx(request):
            return render(request, "_error.html", status_code=status, error=exc.message)
        return render(request, "error.html", status_code=status, error=exc.message, code=status)

    return ui
