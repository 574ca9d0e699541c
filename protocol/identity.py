"""Loopback identity tokens, issued only by the backend.

A token is 46 URL-safe characters: 18 random bytes (24 characters) then a 16-byte
HMAC-SHA256 tag over them (22 characters) under the backend's key (kept in the sessions
root's marker, so tokens survive restarts on that root). A token the backend did not sign
(made up, like ``"a"``, or from another backend) is ignored: its sender gets a new
identity, so presenting someone's guessable name never resumes their sessions. The
identity the backend records is a digest of the token, never the token itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_RANDOM_BYTES = 18
_RANDOM_CHARS = 24
_TAG_BYTES = 16
_TOKEN_CHARS = _RANDOM_CHARS + 22


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class TokenSigner:
    """Issues and checks tokens under one key (a random one when None: valid until exit)."""

    def __init__(self, key: bytes | None = None):
        self._key = key or secrets.token_bytes(32)

    def _tag(self, random_part: str) -> str:
        mac = hmac.new(self._key, random_part.encode(), hashlib.sha256).digest()
        return _b64(mac[:_TAG_BYTES])

    def issue(self) -> str:
        random_part = _b64(secrets.token_bytes(_RANDOM_BYTES))
        return random_part + self._tag(random_part)

    def valid(self, token: str | None) -> bool:
        if not token or len(token) != _TOKEN_CHARS:
            return False
        random_part, tag = token[:_RANDOM_CHARS], token[_RANDOM_CHARS:]
        return hmac.compare_digest(tag, self._tag(random_part))


def token_identity(token: str) -> str:
    """The identity a token stands for (``token:<digest>``), as sessions record it."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]
