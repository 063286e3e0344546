"""Making server text fit for logs and error messages: clipped, key blanked, URL cleaned."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

CLIP = 500


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment, fit for logs and messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:  # a malformed port: show none rather than fail while reporting
        port = None
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact(text: str, api_key: str | None) -> str:
    """``text`` with the API key blanked out, should a server echo it."""
    if api_key and len(api_key) >= 8:
        return text.replace(api_key, "***")
    return text


def clip(text: str, limit: int = CLIP) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more]"


def root_cause(exc: BaseException) -> str:
    """The innermost cause's text, which names the real problem (refused, DNS...)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return clip(str(exc) or type(exc).__name__, 120)
