"""The FastAPI application: routes, pages, static files, access checks and error mapping."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from orchestrator.web.access import (
    CSRF_COOKIE,
    CSRF_HEADER,
    TOKEN_COOKIE,
    UNSAFE_METHODS,
    AccessPolicy,
    cross_site,
    csrf_ok,
    new_csrf_token,
)
from orchestrator.web.api import build_router, error
from orchestrator.web.events import Watcher
from orchestrator.web.notify import Notifier
from orchestrator.web.pages import build_pages
from orchestrator.web.service import AccessViolationError, AnswerRefusedError, ConsoleService
from state.errors import (
    ConcurrencyError,
    ConfigError,
    HumanAnswerError,
    OrchestratorError,
    StateError,
    UnknownWorkflowError,
)

STATIC = Path(__file__).with_name("static")
_OPEN_PATHS = ("/static/", "/login", "/api/session")


def _status_of(exc: OrchestratorError) -> int:
    if isinstance(exc, UnknownWorkflowError):
        return 404
    if isinstance(exc, AnswerRefusedError | ConcurrencyError):
        return 409
    if isinstance(exc, AccessViolationError):
        return 403
    if isinstance(exc, HumanAnswerError | ConfigError | StateError):
        return 422
    return 500


def create_app(
    service: ConsoleService,
    policy: AccessPolicy,
    *,
    notifier: Notifier | None = None,
    watch_interval_s: float = 1.0,
    public_url: str = "",
) -> FastAPI:
    """The console over ``service`` under ``policy``.

    Args:
        service: the facade over the store and the runner.
        policy: who may do what.
        notifier: posts gate waits to webhooks (None: none configured).
        watch_interval_s: how often the live feed polls the store.
        public_url: the console's address as others reach it, for links in webhooks.
    """
    watcher = Watcher(
        service,
        notifier=notifier,
        answer_url=lambda wid: f"{public_url.rstrip('/')}/workflows/{wid}#answer",
        interval_s=watch_interval_s,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        watcher.start()
        # The inbox's first call reads every waiting workflow; do it before anyone asks.
        warming = asyncio.create_task(service.warm())
        try:
            yield
        finally:
            warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warming
            await watcher.stop()
            await service.close()
            if notifier is not None:
                await notifier.aclose()

    app = FastAPI(
        title="hybrid-orchestrator console",
        summary="Inspect decisions and answer human gates.",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url=None,  # the stock docs pages load scripts from a CDN; the console is offline
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.policy = policy
    app.state.watcher = watcher

    @app.exception_handler(OrchestratorError)
    async def _orchestrator_error(_: Request, exc: OrchestratorError) -> JSONResponse:
        extra = {}
        if isinstance(exc, AnswerRefusedError):
            extra = {
                "workflow_id": exc.workflow_id,
                "waiting_gate": exc.waiting_gate,
                "machine_state": exc.machine_state,
            }
        return error(_status_of(exc), str(exc), **extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return error(422, f"invalid request: {problems}")

    @app.middleware("http")
    async def _access(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        return await check_access(policy, request, call_next)

    app.include_router(build_router())
    app.include_router(build_pages())
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def check_access(
    policy: AccessPolicy, request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Apply the access rules (see ``orchestrator.web.access``) to one request."""
    path = request.url.path
    is_api = path.startswith("/api/")
    host = request.headers.get("host")
    if not policy.host_allowed(host):
        return error(400, f"this console answers only to loopback host names, not {host!r}")
    bearer = request.headers.get("authorization", "")
    token = bearer[7:].strip() if bearer.lower().startswith("bearer ") else None
    via_cookie = token is None and TOKEN_COOKIE in request.cookies
    if token is None:
        token = request.cookies.get(TOKEN_COOKIE)
    request.state.user = policy.holder(token)
    if not policy.open and request.state.user is None and not path.startswith(_OPEN_PATHS):
        if is_api:
            return error(401, "an access token is needed: Authorization: Bearer TOKEN")
        return RedirectResponse(f"/login?next={path}", status_code=303)
    if request.method in UNSAFE_METHODS:
        if cross_site(request.headers.get("origin"), request.headers.get("sec-fetch-site"), host):
            return error(403, "cross-site requests may not change anything here")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return error(415, f"send JSON (Content-Type: application/json), not {kind!r}")
        cookie_sent = via_cookie or CSRF_COOKIE in request.cookies
        if cookie_sent and not csrf_ok(
            request.cookies.get(CSRF_COOKIE), request.headers.get(CSRF_HEADER)
        ):
            return error(403, "missing or wrong X-CSRF-Token header; reload the page")
    response = await call_next(request)
    if not is_api and CSRF_COOKIE not in request.cookies:
        response.set_cookie(CSRF_COOKIE, new_csrf_token(), samesite="strict")
    return response
