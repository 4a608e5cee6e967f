"""API keys: a random token shown once, stored as its sha256, compared in constant time.

A token reads ``bl_<key id>_<secret>``; the key id finds the row, the hash of the
whole token is compared with ``hmac.compare_digest``. Scopes: ``read`` (GET),
``submit`` (uploads, analyses, cancel), ``admin`` (deletes; implies the other two).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from service.errors import Forbidden, InvalidInput

SCOPES = ("read", "submit", "admin")
_PREFIX = "bl"
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, its team, its scopes and the team's limits."""

    key_id: str
    team_id: str
    scopes: frozenset[str]
    max_upload_bytes: int
    max_queued_analyses: int

    def require(self, scope: str) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise Forbidden(
                f"this API key lacks the {scope!r} scope; ask for a key with "
                f"--scopes {scope}"
            )


def parse_scopes(scopes: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"read,submit"`` or a list -> sorted known scopes; unknown ones are refused."""
    items = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    found = sorted({s.strip() for s in items if s.strip()})
    unknown = [s for s in found if s not in SCOPES]
    if unknown or not found:
        raise InvalidInput(f"scopes must be some of {', '.join(SCOPES)} (got {items})")
    return found


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str, str]:
    """``(key_id, plaintext, sha256 of the plaintext)``; the plaintext is shown once."""
    key_id = secrets.token_hex(8)
    plaintext = f"{_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    return key_id, plaintext, hash_token(plaintext)


def key_id_of(token: str) -> str | None:
    """The key id a token names, or None when it is not shaped like one of ours."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != _PREFIX or not _KEY_ID.fullmatch(key_id) or not secret:
        return None
    return key_id


def token_matches(token: str, stored_hash: str | None) -> bool:
    """Constant-time comparison; an unknown key still costs one comparison."""
    return hmac.compare_digest(hash_token(token), stored_hash or _DUMMY_HASH) and (
        stored_hash is not None
    )
