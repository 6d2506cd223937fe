"""Who is asking: anonymous, bearer tokens from a file, or a trusted proxy header."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from pathlib import Path

from siasync.errors import AuthenticationError, UsageError
from siasync.settings import Settings
from storage.schema import column_limits

#: the owner of every job when nobody is authenticated; shown as a nil ownerId (UWS 1.1)
ANONYMOUS = "anonymous"
#: the longest owner name the job store holds
MAX_OWNER = column_limits()["jobs.owner"]


def read_tokens(path: Path) -> dict[str, str]:
    """``TOKEN OWNER`` per line; blank lines and ``#`` comments are skipped."""
    tokens = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected 'TOKEN OWNER'")
        if len(parts[1]) > MAX_OWNER:
            raise ValueError(f"{path}:{number}: the owner name is longer than {MAX_OWNER} characters")
        if parts[1] == ANONYMOUS:
            raise ValueError(f"{path}:{number}: the owner name {ANONYMOUS!r} is reserved for unauthenticated jobs")
        tokens[parts[0]] = parts[1]
    return tokens


class Authenticator:
    """Maps a request's headers to its owner, per the configured mode."""

    def __init__(self, settings: Settings) -> None:
        self.mode = settings.auth
        self._tokens = read_tokens(settings.tokens_file) if self.mode == "token" and settings.tokens_file else {}

    def owner(self, headers: Mapping[str, str]) -> str:
        """The owner of the request.

        Raises
        ------
        AuthenticationError
            With a ``WWW-Authenticate`` challenge when credentials are missing or wrong.
        UsageError
            For a proxy header that is given twice (a proxy that appends it), too long or not printable.
        """
        if self.mode == ANONYMOUS:
            return ANONYMOUS
        if self.mode == "header":
            given = headers.getall("x-remote-user", []) if hasattr(headers, "getall") else \
                [headers[k] for k in headers if k.lower() == "x-remote-user"]
            if len(given) > 1 or any("," in value for value in given):
                # a proxy that appends (Apache's RequestHeader add, HAProxy's add-header) instead of setting
                # would let a client's own header through beside the proxy's: whoever asks could be anyone
                raise UsageError("X-Remote-User", "given more than once (or as a list); the proxy must set this "
                                                  "header, replacing any the client sent, not add to it")
            user = given[0].strip() if given else ""
            if not user:
                raise AuthenticationError("no X-Remote-User header from the proxy",
                                          {"WWW-Authenticate": 'Basic realm="siasync"'})
            if len(user) > MAX_OWNER:
                raise UsageError("X-Remote-User", f"{len(user)} characters; an owner name has at most {MAX_OWNER}")
            if not user.isprintable():
                raise UsageError("X-Remote-User", "an owner name is printable text (no control characters)")
            if user == ANONYMOUS:  # the jobs of anonymous mode are shown with no owner; no user can be them
                raise AuthenticationError(f"X-Remote-User: {ANONYMOUS!r} is reserved for unauthenticated jobs",
                                          {"WWW-Authenticate": 'Basic realm="siasync"'})
            return user
        scheme, _, token = headers.get("authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="siasync"'}
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("a bearer token is required (Authorization: Bearer TOKEN)", challenge)
        for known, owner in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                return owner
        raise AuthenticationError("unknown token",
                                  {"WWW-Authenticate": 'Bearer realm="siasync", error="invalid_token"'})
