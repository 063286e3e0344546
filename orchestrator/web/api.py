"""The HTTP API under ``/api/``: the CLI's commands, as JSON in and out.

List, status, inspect, export, answer, start and resume; the chart and the diagram as SVG.

Errors are JSON objects ``{"error": message, ...}``: 404 for an unknown workflow, 409 for
an answer to a gate the workflow no longer waits at (naming the gate it waits at now) or
a workflow already running, 403 for a file outside the workspace, 422 for invalid input.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.web.access import CSRF_COOKIE, TOKEN_COOKIE, AccessPolicy, new_csrf_token
from orchestrator.web.events import Watcher
from orchestrator.web.service import ConsoleService, Page
from state.steps import Gate, WorkflowStatus
from state.workflow import HumanAnswerKind

_FORBID = ConfigDict(extra="forbid")


class LineChangeIn(BaseModel):
    """A change request at a line of the workspace (``request-changes --at``)."""

    model_config = _FORBID

    where: str = Field(description="FILE:LINE, a file of the workspace and a line it has")
    text: str = Field(min_length=1, description="what to change there")


class AnswerIn(BaseModel):
    """An answer at a gate."""

    model_config = _FORBID

    gate: Gate = Field(description="the gate the answerer saw; refused if it waits elsewhere")
    answer: HumanAnswerKind
    changes: list[str] = Field(default_factory=list, description="change requests or guidance")
    at: list[LineChangeIn] = Field(
        default_factory=list, description="change requests at a FILE:LINE of the workspace"
    )
    comment: str | None = None
    by: str | None = Field(
        None, description="who answers; ignored when tokens are configured (the holder's name)"
    )
    resume: bool = Field(False, description="run the workflow on right away")


class StartIn(BaseModel):
    """A new workflow."""

    model_config = _FORBID

    requirements: str = Field(min_length=1)
    config: dict[str, Any] | None = Field(None, description="a workflow config, as in YAML")


class SessionIn(BaseModel):
    """A login: the access token to keep in a cookie."""

    model_config = _FORBID

    token: str


class ErrorOut(BaseModel):
    """A refusal."""

    model_config = _FORBID

    error: str
    workflow_id: str | None = None
    waiting_gate: str | None = None
    machine_state: str | None = None


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 409, 415, 422)
}


def _service(request: Request) -> ConsoleService:
    service: ConsoleService = request.app.state.service
    return service


def _user(request: Request) -> str | None:
    user: str | None = getattr(request.state, "user", None)
    return user


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """A JSON refusal."""
    return JSONResponse({"error": message, **extra}, status_code=status)


# The routes keep no state of their own: the service, the policy and the watcher are the
# application's (``request.app.state``), so one router serves every app built.
api = APIRouter(prefix="/api", responses=_ERRORS)


@api.get("/whoami")
async def whoami(request: Request) -> dict[str, Any]:
    """Who the console takes the caller for, and what it can do."""
    policy: AccessPolicy = request.app.state.policy
    return {
        "name": _user(request),
        "open": policy.open,
        "can_run": _service(request).can_run,
    }


@api.post("/session")
async def session(body: SessionIn, request: Request) -> Response:
    """Log in: keep a valid access token in an HTTP-only cookie (and a CSRF cookie)."""
    policy: AccessPolicy = request.app.state.policy
    name = policy.holder(body.token)
    if name is None:
        return error(401, "unknown access token; ask the console's operator for one")
    response = JSONResponse({"name": name})
    secure = request.url.scheme == "https"  # behind TLS the token never travels in clear
    response.set_cookie(TOKEN_COOKIE, body.token, httponly=True, samesite="strict", secure=secure)
    response.set_cookie(CSRF_COOKIE, new_csrf_token(), samesite="strict", secure=secure)
    return response


PAGE_DEFAULT = 100
PAGE_MAX = 1000

Limit = Annotated[
    int,
    Query(ge=1, le=PAGE_MAX, description=f"the most rows to return (at most {PAGE_MAX})"),
]
Offset = Annotated[int, Query(ge=0, description="how many rows to skip")]


def _paged(request: Request, response: Response, page: Page) -> list[dict[str, Any]]:
    """A page's rows; its place in the whole goes in the headers.

    ``X-Total-Count`` is the length of the whole listing, and ``Link`` names the ``next``
    and ``prev`` pages (as GitHub's API does), so the body stays a plain list.
    """
    response.headers["X-Total-Count"] = str(page.total)
    links: list[str] = []
    if page.limit is not None:
        if page.offset + page.limit < page.total:
            nxt = request.url.include_query_params(offset=page.offset + page.limit)
            links.append(f'<{nxt}>; rel="next"')
        if page.offset > 0:
            prev = request.url.include_query_params(offset=max(0, page.offset - page.limit))
            links.append(f'<{prev}>; rel="prev"')
    if links:
        response.headers["Link"] = ", ".join(links)
    return page.items


@api.get("/workflows")
async def list_workflows(
    request: Request,
    response: Response,
    status: Annotated[WorkflowStatus | None, Query()] = None,
    gate: Annotated[Gate | None, Query()] = None,
    limit: Limit = PAGE_DEFAULT,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Workflows, the most recently updated first (``orchestrator list``), a page at a time.

    ``X-Total-Count`` says how many match; ``Link`` names the next and previous pages.
    """
    page = await _service(request).list_workflows(
        status, gate.value if gate else None, limit=limit, offset=offset
    )
    return _paged(request, response, page)


@api.post("/workflows", status_code=201)
async def start(body: StartIn, request: Request) -> dict[str, Any]:
    """Start a new workflow from a requirement and an optional config."""
    by = _user(request) or "console"
    return await _service(request).start(body.requirements, body.config, by=by)


@api.get("/inbox")
async def inbox(
    request: Request, response: Response, limit: Limit = PAGE_DEFAULT, offset: Offset = 0
) -> list[dict[str, Any]]:
    """The workflows waiting at a gate, the longest waiting first, a page at a time.

    ``X-Total-Count`` says how many wait; ``Link`` names the next and previous pages.
    """
    page = await _service(request).inbox(limit=limit, offset=offset)
    return _paged(request, response, page)


@api.get("/workflows/{workflow_id}")
async def inspect(workflow_id: str, request: Request) -> dict[str, Any]:
    """The decision timeline, validation rounds, answers and artifacts (``inspect``)."""
    return await _service(request).workflow(workflow_id)


@api.get("/workflows/{workflow_id}/status")
async def status_(workflow_id: str, request: Request) -> dict[str, Any]:
    """Where a workflow stands (``orchestrator status``)."""
    info: dict[str, Any] = (await _service(request).workflow(workflow_id))["workflow"]
    return info


@api.get("/workflows/{workflow_id}/rounds")
async def rounds(workflow_id: str, request: Request) -> list[dict[str, Any]]:
    """Every attempt at every step with its plan, report, code change or error."""
    return await _service(request).rounds(workflow_id)


@api.get("/workflows/{workflow_id}/export")
async def export(workflow_id: str, request: Request) -> list[dict[str, Any]]:
    """The whole ledger (``orchestrator export``)."""
    return await _service(request).export(workflow_id)


@api.get("/workflows/{workflow_id}/chart.svg", response_class=Response)
async def chart(workflow_id: str, request: Request) -> Response:
    """The convergence chart as SVG."""
    svg = await _service(request).chart_svg(workflow_id)
    return Response(svg, media_type="image/svg+xml")


@api.get("/workflows/{workflow_id}/diagram.svg", response_class=Response)
async def diagram(workflow_id: str, request: Request) -> Response:
    """The state-machine diagram with this workflow's edge counts, as SVG."""
    svg = await _service(request).diagram_svg(workflow_id)
    return Response(svg, media_type="image/svg+xml")


@api.get("/workflows/{workflow_id}/artifacts")
async def artifacts(workflow_id: str, request: Request) -> list[dict[str, Any]]:
    """The files the workflow produced."""
    found: list[dict[str, Any]] = (await _service(request).workflow(workflow_id))["artifacts"]
    return found


@api.get("/workflows/{workflow_id}/file")
async def read_file(
    workflow_id: str, request: Request, path: Annotated[str, Query(min_length=1)]
) -> Response:
    """One artifact's text; only recorded artifacts inside the workspace are served."""
    text = await _service(request).read_file(workflow_id, path)
    return Response(text, media_type="text/plain; charset=utf-8")


@api.post("/workflows/{workflow_id}/answer")
async def answer(workflow_id: str, body: AnswerIn, request: Request) -> Response:
    """Answer the gate the workflow waits at; 409 when it no longer waits there."""
    policy: AccessPolicy = request.app.state.policy
    by = _user(request) if not policy.open else (body.by or "").strip()
    if not by:
        return error(422, f"workflow {workflow_id}: say who answers (the 'by' field)")
    result = await _service(request).answer(
        workflow_id,
        body.gate.value,
        body.answer,
        by=by,
        changes=body.changes,
        at=[(c.where, c.text) for c in body.at],
        comment=body.comment or None,
        resume=body.resume,
    )
    return JSONResponse(result)


@api.post("/workflows/{workflow_id}/resume", status_code=202)
async def resume(workflow_id: str, request: Request) -> dict[str, Any]:
    """Run the workflow on in this console (after an answer, a crash, a restart)."""
    return await _service(request).resume(workflow_id)


@api.get("/events", response_class=StreamingResponse)
async def events(request: Request) -> StreamingResponse:
    """Server-sent events: ``workflow`` each time a workflow's stored version moves."""
    watcher: Watcher = request.app.state.watcher
    return StreamingResponse(
        watcher.subscribe(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def build_router() -> APIRouter:
    """The ``/api`` routes."""
    return api
