"""Browser safety: the ``Host`` a request names, changes sent from other sites, and the headers of every answer.

`BrowserGuard` wraps the application's ASGI handler (like `siasync.web.head.HeadAsGet`):

* **Hosts.** A request must name one of the allowed hosts in its ``Host`` header (`HostPolicy`):
  the ``ALLOWED_HOSTS`` setting, or by default the host the service is served as (PUBLIC_URL's,
  and HOST's: the loopback names for a loopback HOST; for a wildcard HOST, this machine's names
  and any IP address). A page of another name that resolves to this server (DNS rebinding) is
  refused with 400, and the service never writes a host it does not serve into its links.
* **Changes from other sites.** A POST, PUT, PATCH or DELETE that a browser sends from a page of
  another origin is refused with 403: its ``Origin`` (or, without one, its ``Referer``) must be the
  request's own host, the public URL's, or a host listed in ``ALLOWED_HOSTS``. Browsers send
  ``Origin`` with every cross-origin POST, so a form on another site cannot create, run or delete
  jobs for the person viewing it; clients that are not browsers send neither header and are not
  affected. ``Origin: null`` (sandboxed frames, some redirects) is refused.
* **Headers.** Every answer carries a Content-Security-Policy (scripts, styles, images and
  connections from this service only, no framing), ``X-Content-Type-Options: nosniff``,
  ``X-Frame-Options: DENY`` and ``Referrer-Policy: same-origin``. A handler that sets its own
  policy (an uploaded table served back) keeps it.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from siasync.settings import Settings

#: the policy of every answer: the pages load their scripts, styles and images from /static/ and the API only
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
#: the policy of content a client gave (an uploaded table): nothing in it runs, even opened in a browser
SANDBOX_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'"
HEADERS = ((b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin"))
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
_WILDCARD = ("0.0.0.0", "::", "")


def split_host(value: str) -> tuple[str, str]:
    """(host, port) of a ``Host`` header or URL authority, the host lower-case without a trailing dot and
    IPv6 brackets; the port as written ('' when none, or the default of HTTP or HTTPS)."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = value.partition(":")
    return host.rstrip("."), "" if port in ("80", "443") else port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class HostPolicy:
    """Which ``Host`` values a request may name, and which origins may send changes (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.any_host = "*" in settings.allowed_hosts
        self.any_ip = False
        #: names given in ALLOWED_HOSTS: pages on them (any port) may send changes
        self.declared = {split_host(h.lstrip("."))[0] for h in settings.allowed_hosts if h != "*"}
        self.suffixes = tuple(h.lower() for h in settings.allowed_hosts if h.startswith("."))
        self.public = split_host(urlsplit(settings.public_url).netloc) if settings.public_url else None
        names = set(self.declared)
        if not settings.allowed_hosts:
            if self.public is not None:
                names.add(self.public[0])
            listen = split_host(settings.host)[0] if not _is_ip(settings.host) else settings.host.lower()
            if listen in _LOOPBACK or listen.startswith("127."):
                names.update(_LOOPBACK)
            elif listen in _WILDCARD:  # any interface: this machine's names, its addresses (any IP), loopback
                names.update(_LOOPBACK)
                names.update(n.lower() for n in (socket.gethostname(), socket.getfqdn()) if n)
                self.any_ip = True
            else:
                names.add(listen)
        self.names = frozenset(names)

    def allows(self, host: str) -> bool:
        """Whether a request may name ``host`` (as `split_host` gives it)."""
        return (self.any_host or host in self.names or any(("." + host).endswith(s) for s in self.suffixes)
                or (self.any_ip and _is_ip(host)))

    def trusted_origin(self, origin: str, host_header: str) -> bool:
        """Whether a change sent from a page of ``origin`` (scheme://host[:port]) to ``host_header`` is this
        service's own: the same host and port as the request, the public URL's, or a declared host."""
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        sender = split_host(parts.netloc)
        return (sender == split_host(host_header) or sender == self.public or sender[0] in self.declared
                or any(("." + sender[0]).endswith(s) for s in self.suffixes))


def _refusal(status: int, text: str) -> tuple[Message, Message]:
    body = text.encode("utf-8", "replace")
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                         *HEADERS]}
    return start, {"type": "http.response.body", "body": body, "more_body": False}


class BrowserGuard:
    """ASGI middleware: refuse other hosts and cross-site changes, and add the safety headers to every answer."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    def _problem(self, scope: Scope) -> tuple[int, str] | None:
        """Why the request is refused (status, text), or None."""
        headers: dict[bytes, list[bytes]] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.lower(), []).append(value)
        hosts = headers.get(b"host", [])
        host_header = hosts[0].decode("latin-1") if hosts else ""
        if len(hosts) > 1:
            return 400, "UsageError: Host: given more than once\n"
        if hosts and not self.policy.allows(split_host(host_header)[0]):
            shown = host_header[:100].encode("unicode_escape").decode("ascii")
            return 400, (f"UsageError: Host: this service does not answer to {shown!r}; its operator can add the "
                         "name to ALLOWED_HOSTS\n")
        if scope["method"] in _SAFE_METHODS:
            return None
        origins = headers.get(b"origin") or headers.get(b"referer")
        if not origins:
            return None  # not sent by a browser's page: API clients
        origin = origins[0].decode("latin-1").strip()
        if b"origin" not in headers:  # a Referer: its origin
            parts = urlsplit(origin)
            origin = f"{parts.scheme}://{parts.netloc}"
        if len(origins) > 1 or not self.policy.trusted_origin(origin, host_header):
            shown = origin[:100].encode("unicode_escape").decode("ascii")
            return 403, (f"PermissionDenied: Origin: a {scope['method']} from a page of {shown!r}, another site; "
                         "this service takes changes only from its own pages and from clients that are not browsers\n")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self._problem(scope)
        if problem is not None:
            for message in _refusal(*problem):
                await send(message)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *(h for h in HEADERS if h[0] not in present)]}
            await send(message)

        await self.app(scope, receive, with_headers)
