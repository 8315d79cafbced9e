"""Client secrets: generated with enough entropy, stored only as salted scrypt hashes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

__all__ = [
    "generate_client_id",
    "generate_secret",
    "hash_secret",
    "unmatchable_hash",
    "verify_secret",
]

_N, _R, _P = 2**14, 8, 1


def generate_secret() -> str:
    return secrets.token_urlsafe(32)


def generate_client_id() -> str:
    return "rb_" + secrets.token_hex(12)


def _derive(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=32)


def hash_secret(secret: str) -> str:
    """`scrypt$n$r$p$salt$hash`, base64 parts; verifying costs tens of milliseconds by design."""
    salt = secrets.token_bytes(16)
    digest = _derive(secret, salt, _N, _R, _P)
    encode = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${encode(salt).decode()}${encode(digest).decode()}"


def unmatchable_hash() -> str:
    """A well-formed hash that checking costs as much as a real one, and that no secret
    matches short of inverting scrypt (its digest is all zeros)."""
    encode = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${encode(bytes(16)).decode()}${encode(bytes(32)).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether `secret` matches `stored`; a malformed `stored` value never matches."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = _derive(secret, base64.b64decode(salt), int(n), int(r), int(p))
        return hmac.compare_digest(actual, base64.b64decode(digest))
    except (ValueError, binascii.Error):
        return False
