"""Access tokens: JWTs signed with an asymmetric key, verified by any node without a catalog call.

Claims: `iss` (`replaybus`), `aud` (this service: REPLAYBUS_PUBLIC_URL, else `replaybus`),
`sub` (client id), `tid` (tenant), `usr` (user, for user grants), `cgn` (the client's
generation), `scope` (space-separated), `use` (`access` or `refresh`), `iat`, `exp`, `jti`. A
token for another audience is refused. Refresh tokens are signed the same way and are never
accepted where an access token is expected; they also carry `fam` (their family: the password
grant that began the chain of rotations) and `gen` (their place in it, from 0), which make each
one single use: a use moves the family from its generation to the next.
"""

from __future__ import annotations

import re
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OctKey, OKPKey, RSAKey

from app.access import Principal
from app.clock import Clock
from app.errors import TokenExpired, TokenInvalid
from app.settings import Settings, SettingsError

__all__ = [
    "DEFAULT_AUDIENCE",
    "IssuedToken",
    "RefreshToken",
    "TokenService",
    "load_signing_key",
    "load_verification_keys",
]

SigningKey = ECKey | RSAKey | OKPKey
_FAMILY = re.compile(r"[A-Za-z0-9_-]{1,64}")  # as `secrets.token_urlsafe` makes them
_ISSUER = "replaybus"
DEFAULT_AUDIENCE = "replaybus"
_CACHE_SIZE = 4096


def _algorithm(key: SigningKey) -> str:
    if isinstance(key, RSAKey):
        return "RS256"
    if isinstance(key, ECKey):
        if key.curve_name != "P-256":
            raise SettingsError(
                f"REPLAYBUS_SIGNING_KEY: EC keys must use curve P-256, got {key.curve_name}"
            )
        return "ES256"
    if key.curve_name != "Ed25519":
        raise SettingsError(
            f"REPLAYBUS_SIGNING_KEY: OKP keys must be Ed25519, got {key.curve_name}"
        )
    return "Ed25519"


def load_signing_key(settings: Settings) -> SigningKey:
    """The configured PEM key (inline or from a file), or a fresh EC P-256 key."""
    pem: str | None = settings.signing_key
    if settings.signing_key_file is not None:
        try:
            pem = Path(settings.signing_key_file).read_text()
        except OSError as error:
            raise SettingsError(f"REPLAYBUS_SIGNING_KEY_FILE: cannot read it: {error}") from None
    if pem is None:
        key: SigningKey = ECKey.generate_key("P-256", private=True)
    else:
        key = _import_pem(pem.encode())
    key.ensure_kid()
    _algorithm(key)
    return key


def _import_pem(
    pem: bytes, setting: str = "REPLAYBUS_SIGNING_KEY", private: bool = True
) -> SigningKey:
    for key_type in (ECKey, RSAKey, OKPKey):
        try:
            key = key_type.import_key(pem)
        except (ValueError, TypeError, JoseError):
            continue
        if private and not key.is_private:
            raise SettingsError(f"{setting}: a private key is needed, got a public one")
        return key
    raise SettingsError(f"{setting}: not a PEM EC P-256, RSA or Ed25519 key")


_PEM_BLOCK = re.compile(rb"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----", re.DOTALL)


def load_verification_keys(settings: Settings) -> list[SigningKey]:
    """Extra keys that still verify tokens (public or private PEM blocks, concatenated): the
    previous signing key during a rotation, so tokens it signed stay valid until they expire."""
    if not settings.verification_keys:
        return []
    blocks = _PEM_BLOCK.findall(settings.verification_keys.encode())
    if not blocks:
        raise SettingsError("REPLAYBUS_VERIFICATION_KEYS: no PEM key found")
    keys = []
    for block in blocks:
        key = _import_pem(block, "REPLAYBUS_VERIFICATION_KEYS", private=False)
        key.ensure_kid()
        _algorithm(key)
        keys.append(key)
    return keys


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    issued_at: float
    expires_in: int
    scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """A verified refresh token: whom it names, its family and its generation in it (a token
    from before families is a family of its own, its `jti`, at generation 0)."""

    principal: Principal
    family: str
    generation: int


class TokenService:
    def __init__(
        self,
        key: SigningKey,
        ttl: float,
        clock: Clock,
        refresh_ttl: float = 30 * 86400,
        verification_keys: Sequence[SigningKey] = (),
        audience: str = DEFAULT_AUDIENCE,
    ) -> None:
        """Signs with `key`; verifies with it and `verification_keys`, chosen by `kid`, only
        tokens whose `aud` is `audience`."""
        self._audience = audience
        self._refresh_ttl = int(refresh_ttl)
        self._key = key
        self._algorithm = _algorithm(key)
        others = [k for k in verification_keys if k.kid != key.kid]
        self._all_keys = [key, *others]
        self._algorithms = sorted({_algorithm(k) for k in self._all_keys})
        self._keys = KeySet(list[OctKey | RSAKey | ECKey | OKPKey](self._all_keys))
        self._ttl = int(ttl)
        self._clock = clock
        self._verified: OrderedDict[str, Principal] = OrderedDict()

    def jwks(self) -> dict[str, Any]:
        """The public keys, for `/.well-known/jwks.json` (the signing key first)."""
        published = []
        for key in self._all_keys:
            public = key.as_dict(private=False)
            public.update({"use": "sig", "alg": _algorithm(key)})
            published.append(public)
        return {"keys": published}

    def issue(
        self,
        tenant: str,
        client_id: str,
        scopes: tuple[str, ...],
        user: str | None = None,
        generation: str = "",
    ) -> IssuedToken:
        now = self._clock.now_us() / 1_000_000
        token = self._sign(tenant, client_id, scopes, user, generation, "access", now, self._ttl)
        return IssuedToken(token, now, self._ttl, scopes)

    def issue_refresh(
        self,
        tenant: str,
        client_id: str,
        scopes: tuple[str, ...],
        user: str,
        generation: str = "",
        replaces: RefreshToken | None = None,
    ) -> str:
        """A refresh token valid for the refresh TTL, beginning a new family; or, replacing
        `replaces` (a rotation), the next generation of its family, ending when it would have
        if that is sooner."""
        now = self._clock.now_us() / 1_000_000
        ttl = self._refresh_ttl
        lineage: dict[str, object] = {"fam": secrets.token_urlsafe(12), "gen": 0}
        if replaces is not None:
            ttl = max(0, min(ttl, int(replaces.principal.expires_at) - int(now)))
            lineage = {"fam": replaces.family, "gen": replaces.generation + 1}
        return self._sign(tenant, client_id, scopes, user, generation, "refresh", now, ttl, lineage)

    def _sign(
        self,
        tenant: str,
        client_id: str,
        scopes: tuple[str, ...],
        user: str | None,
        generation: str,
        use: str,
        now: float,
        ttl: int,
        extra: dict[str, object] | None = None,
    ) -> str:
        claims: dict[str, object] = {
            "iss": _ISSUER,
            "aud": self._audience,
            "sub": client_id,
            "tid": tenant,
            "scope": " ".join(scopes),
            "use": use,
            "iat": int(now),
            "exp": int(now) + ttl,
            "jti": secrets.token_urlsafe(12),
        }
        if user is not None:
            claims["usr"] = user
        if generation:
            claims["cgn"] = generation
        claims.update(extra or {})
        header = {"alg": self._algorithm, "kid": self._key.kid}
        return jwt.encode(header, claims, self._key, algorithms=[self._algorithm])

    def verify_refresh(self, token: str) -> RefreshToken:
        """The principal a refresh token names, its family and generation; raises TokenInvalid
        or TokenExpired. Whether it was used or revoked already is the caller's to check."""
        claims = self._claims(token)
        principal = self._principal(claims, use="refresh")
        if principal.expires_at <= self._clock.now_us() / 1_000_000:
            raise TokenExpired("the refresh token has expired")
        family, generation = claims.get("fam", claims.get("jti")), claims.get("gen", 0)
        if not isinstance(family, str) or not _FAMILY.fullmatch(family):
            raise TokenInvalid("the refresh token is not valid")
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
            raise TokenInvalid("the refresh token is not valid")
        return RefreshToken(principal, family, generation)

    def verify(self, token: str) -> Principal:
        """The principal a token names; raises TokenInvalid or TokenExpired.

        Verified tokens are remembered (bounded, least recently used first out), so the
        signature is checked once per token per node, while expiry is checked on every call.
        """
        principal = self._verified.get(token)
        if principal is None:
            principal = self._principal(self._claims(token), use="access")
            self._verified[token] = principal
            if len(self._verified) > _CACHE_SIZE:
                self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(token)
        if principal.expires_at <= self._clock.now_us() / 1_000_000:
            raise TokenExpired("the access token has expired: request a new one")
        return principal

    def _claims(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._keys, algorithms=self._algorithms
            ).claims
        except (JoseError, ValueError, TypeError):
            raise TokenInvalid("the access token is not valid") from None
        return claims

    def _principal(self, claims: dict[str, Any], use: str) -> Principal:
        tenant, client_id = claims.get("tid"), claims.get("sub")
        scope, expires = claims.get("scope"), claims.get("exp")
        if claims.get("iss") != _ISSUER or not isinstance(tenant, str) or not tenant:
            raise TokenInvalid("the access token is not valid")
        if claims.get("aud") != self._audience:
            raise TokenInvalid("the access token was not issued for this service")
        if not isinstance(client_id, str) or not isinstance(scope, str):
            raise TokenInvalid("the access token is not valid")
        if not isinstance(expires, int) or claims.get("use", "access") != use:
            raise TokenInvalid("the access token is not valid")
        user = claims.get("usr")
        generation = claims.get("cgn", "")
        if (user is not None and not isinstance(user, str)) or not isinstance(generation, str):
            raise TokenInvalid("the access token is not valid")
        return Principal(
            tenant, client_id, frozenset(scope.split()), float(expires), user, generation
        )
