"""Who may use the console, and the checks every request passes.

Rules:

- Bound to a loopback address, the console may run open (no tokens configured): anyone who
  can reach the port is the machine's user. To guard against a web page in that user's
  browser reaching it, requests must name a loopback ``Host`` (no DNS rebinding).
- Bound to any other address it refuses to start unless access tokens are configured; then
  every request must carry a known token (``Authorization: Bearer TOKEN``, or the cookie
  the login page sets), and answers are recorded under the token holder's name.
- A request that changes something must be JSON, must not come from another site
  (``Origin`` / ``Sec-Fetch-Site``), and, when a browser sends the console's cookies, must
  repeat the CSRF cookie in the ``X-CSRF-Token`` header. A cross-site form post fails all
  three.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from state.errors import ConfigError

TOKEN_COOKIE = "orch_token"  # noqa: S105 - the cookie's name, not a secret
CSRF_COOKIE = "orch_csrf"
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts local connections."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_tokens(text: str, source: str) -> dict[str, str]:
    """``NAME:TOKEN`` pairs (one per line or comma-separated) as ``{token: name}``.

    Raises:
        ConfigError: a pair has no name or no token, or a token is shorter than 16 chars.
    """
    out: dict[str, str] = {}
    for raw in text.replace(",", "\n").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        if not sep or not name.strip() or not token.strip():
            raise ConfigError(f"{source}: expected NAME:TOKEN, got {line[:40]!r}")
        if len(token.strip()) < 16:
            raise ConfigError(
                f"{source}: the token of {name.strip()} is shorter than 16 characters; "
                "make one with: python -c 'import secrets; print(secrets.token_urlsafe())'"
            )
        out[token.strip()] = name.strip()
    return out


def read_token_file(path: Path) -> dict[str, str]:
    """The tokens in a file of ``NAME:TOKEN`` lines.

    Raises:
        ConfigError: the file cannot be read or a line is malformed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the token file ({exc.strerror})") from exc
    return parse_tokens(text, str(path))


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """The console's access rules for one bind address.

    Attributes:
        host: the address the server binds to.
        tokens: ``{token: holder's name}``; empty means open (loopback only).
    """

    host: str = "127.0.0.1"
    tokens: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.tokens and not is_loopback(self.host):
            raise ConfigError(
                f"the console would listen on {self.host}, which other machines can reach, "
                "without an access token; give --token-file FILE (lines NAME:TOKEN) or "
                "ORCHESTRATOR_WEB_TOKENS, or bind to 127.0.0.1"
            )

    @property
    def open(self) -> bool:
        """Whether requests need no token."""
        return not self.tokens

    def holder(self, token: str | None) -> str | None:
        """The name of the token's holder, or None for an unknown token.

        Compared in constant time, so response times do not leak a token's prefix.
        """
        if not token:
            return None
        for known, name in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return name
        return None

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether the ``Host`` a request names fits the bind address.

        Open consoles answer only to loopback names, so a page that rebinds its own domain
        to 127.0.0.1 cannot drive them.
        """
        if not self.open:
            return True
        if not host_header:
            return False
        return is_loopback(urlsplit(f"//{host_header}").hostname or "")


def cross_site(origin: str | None, fetch_site: str | None, host_header: str | None) -> bool:
    """Whether a request comes from another site (by ``Sec-Fetch-Site`` or ``Origin``)."""
    if fetch_site is not None and fetch_site.lower() == "cross-site":
        return True
    if not origin:
        return False
    if origin == "null":
        return True
    return urlsplit(origin).netloc.lower() != (host_header or "").lower()


def csrf_ok(cookie: str | None, header: str | None) -> bool:
    """Whether the CSRF header repeats the CSRF cookie."""
    return bool(cookie) and bool(header) and hmac.compare_digest(str(cookie), str(header))


def new_csrf_token() -> str:
    """A fresh random CSRF token."""
    return secrets.token_urlsafe(24)
