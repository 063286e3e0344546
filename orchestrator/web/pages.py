"""The console's pages: small HTML shells that ``static/console.js`` fills from ``/api/``.

The pages hold no data themselves, so everything a user sees in the browser is also
available to scripts through the API, and the API's access rules cover both.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · hybrid-orchestrator</title>
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head>
<body>
<header>
  <a class="brand" href="/">hybrid-orchestrator</a>
  <nav>
    <a href="/" id="nav-inbox">Inbox</a> <a href="/workflows" id="nav-workflows">Workflows</a>
  </nav>
  <span id="live" class="live" title="live updates">○ offline</span>
  <span id="whoami" class="whoami"></span>
</header>
<main id="app" data-page="{page}"{extra}>
  <h1>{title}</h1>
  <p class="loading">loading…</p>
</main>
</body>
</html>
"""


def page(title: str, name: str, **data: str) -> HTMLResponse:
    """A page shell: ``name`` tells the script what to render; ``data`` become attributes."""
    extra = "".join(f' data-{k.replace("_", "-")}="{escape(v)}"' for k, v in data.items())
    html = _PAGE.format(title=escape(title), page=name, extra=extra)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def build_pages() -> APIRouter:
    """The page routes (left out of the OpenAPI document: they are not API)."""
    pages = APIRouter(include_in_schema=False)

    @pages.get("/")
    async def inbox() -> HTMLResponse:
        """Workflows waiting at a gate."""
        return page("Inbox", "inbox")

    @pages.get("/workflows")
    async def workflows() -> HTMLResponse:
        """Every workflow, filtered; the start form."""
        return page("Workflows", "workflows")

    @pages.get("/workflows/{workflow_id}")
    async def workflow(workflow_id: str) -> HTMLResponse:
        """One workflow: answer form, chart, diagram, timeline, rounds, artifacts."""
        return page(f"Workflow {workflow_id}", "workflow", workflow_id=workflow_id)

    @pages.get("/login")
    async def login() -> HTMLResponse:
        """The token form."""
        return page("Log in", "login")

    return pages
