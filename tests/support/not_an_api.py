"""A loopback HTTP server that is not an LLM API: it answers like a web site or a 404.

For the paths where a user points the orchestrator at the wrong URL::

    with not_an_api("html") as url:
        ...  # GET {url}/models answers 200 text/html
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _NotAnAPIHandler(BaseHTTPRequestHandler):
    """Answers every GET with a web page or a 404, like a URL that is not an LLM API."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        status, body, kind = self.server.reply  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET


NOT_AN_API = {
    "html": (200, b"<html><body>a web page</body></html>", "text/html"),
    "404": (404, b"not found", "text/plain"),
}


@contextlib.contextmanager
def not_an_api(kind: str) -> Iterator[str]:
    """A loopback server answering like a web site (``html``) or nothing (``404``); its URL."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _NotAnAPIHandler)
    srv.reply = NOT_AN_API[kind]  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    finally:
        srv.shutdown()
        srv.server_close()
