"""The web console and its HTTP API (``orchestrator serve``).

``service`` is the one module here that talks to the store, the runner and the deciding
code; the routes (``api``), the pages (``pages``), the live feed (``events``) and the
webhooks (``notify``) go through it (``shapes`` and ``svg`` only format its data), so a
change to those layers is adapted in one file. ``server`` is uvicorn, told to end the live
feed's streams when it shuts down.
"""

__all__ = [
    "access",
    "api",
    "app",
    "events",
    "notify",
    "pages",
    "server",
    "service",
    "shapes",
    "svg",
]
