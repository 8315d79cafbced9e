"""Access tokens: issue, verify, expire, refuse; signing keys; the Authorization header."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from joserfc import jwt
from joserfc.jwk import ECKey

from api.access_log import redact_query
from api.auth import token_from_header
from api.tokens import TokenService, load_signing_key, load_verification_keys
from app.access import Principal
from app.errors import TokenExpired, TokenInvalid
from app.settings import Settings, SettingsError
from tests.fakes import FakeClock

TTL = 3600
NOW = 1_700_000_000  # FakeClock's default wall time, in seconds

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | x25519.X25519PrivateKey
)


def _pem(key: PrivateKey, fmt: serialization.PrivateFormat) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


PKCS8 = serialization.PrivateFormat.PKCS8
TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL

ACCEPTED_KEYS: list[tuple[str, Callable[[], str], str]] = [
    ("rsa-pkcs8", lambda: _pem(_rsa(), PKCS8), "RS256"),
    ("rsa-traditional", lambda: _pem(_rsa(), TRADITIONAL), "RS256"),
    ("ec-p256-pkcs8", lambda: _pem(_p256(), PKCS8), "ES256"),
    ("ec-p256-traditional", lambda: _pem(_p256(), TRADITIONAL), "ES256"),
    ("ed25519", lambda: _pem(ed25519.Ed25519PrivateKey.generate(), PKCS8), "Ed25519"),
]


def _public_pem(key: PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


REFUSED_KEYS: list[tuple[str, Callable[[], str]]] = [
    ("rsa-public", lambda: _public_pem(_rsa())),
    ("ec-p256-public", lambda: _public_pem(_p256())),
    ("ed25519-public", lambda: _public_pem(ed25519.Ed25519PrivateKey.generate())),
    ("ec-p384", lambda: _pem(ec.generate_private_key(ec.SECP384R1()), PKCS8)),
    ("ec-p521", lambda: _pem(ec.generate_private_key(ec.SECP521R1()), PKCS8)),
    ("x25519", lambda: _pem(x25519.X25519PrivateKey.generate(), PKCS8)),
    ("garbage", lambda: "not a key at all"),
    ("empty", lambda: ""),
    (
        "pem-armour-around-junk",
        lambda: "-----BEGIN PRIVATE KEY-----\nAAAAjunkjunk\n-----END PRIVATE KEY-----\n",
    ),
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(clock: FakeClock) -> TokenService:
    return TokenService(load_signing_key(Settings()), TTL, clock)


def test_issued_token_verifies_to_its_principal(service: TokenService) -> None:
    issued = service.issue("acme", "client-1", ("publish", "subscribe"))

    principal = service.verify(issued.access_token)

    assert principal == Principal(
        tenant="acme",
        client_id="client-1",
        scopes=frozenset({"publish", "subscribe"}),
        expires_at=float(NOW + TTL),
    )
    assert (issued.issued_at, issued.expires_in, issued.scopes) == (
        NOW,
        TTL,
        ("publish", "subscribe"),
    )


def test_token_without_scopes_verifies_with_no_scopes(service: TokenService) -> None:
    principal = service.verify(service.issue("acme", "c", ()).access_token)

    assert principal.scopes == frozenset()


def test_two_tokens_for_the_same_client_differ(service: TokenService) -> None:
    first = service.issue("acme", "c", ("publish",)).access_token
    second = service.issue("acme", "c", ("publish",)).access_token

    assert first != second


def test_token_is_valid_until_its_last_second(service: TokenService, clock: FakeClock) -> None:
    token = service.issue("acme", "c", ("publish",)).access_token

    clock.advance(TTL - 1)

    assert service.verify(token).client_id == "c"


def test_token_expires_after_its_ttl(service: TokenService, clock: FakeClock) -> None:
    token = service.issue("acme", "c", ("publish",)).access_token

    clock.advance(TTL)

    with pytest.raises(TokenExpired):
        service.verify(token)


def test_cached_token_still_expires(service: TokenService, clock: FakeClock) -> None:
    token = service.issue("acme", "c", ("publish",)).access_token
    assert service.verify(token).tenant == "acme"

    clock.advance(TTL)

    with pytest.raises(TokenExpired):
        service.verify(token)
    with pytest.raises(TokenExpired):
        service.verify(token)


def test_token_signed_by_another_key_is_invalid(service: TokenService, clock: FakeClock) -> None:
    other = TokenService(load_signing_key(Settings()), TTL, clock)
    token = other.issue("acme", "c", ("publish", "admin")).access_token

    with pytest.raises(TokenInvalid):
        service.verify(token)


def test_token_signed_by_another_key_type_is_invalid(
    service: TokenService, clock: FakeClock
) -> None:
    other_key = load_signing_key(Settings(signing_key=_pem(_rsa(), PKCS8)))
    token = TokenService(other_key, TTL, clock).issue("acme", "c", ("admin",)).access_token

    with pytest.raises(TokenInvalid):
        service.verify(token)


def test_a_token_carries_this_service_as_its_audience(clock: FakeClock) -> None:
    key = load_signing_key(Settings())
    token = TokenService(key, TTL, clock).issue("acme", "c", ("publish",)).access_token

    assert jwt.decode(token, key).claims["aud"] == "replaybus"


def test_a_token_for_another_audience_is_invalid(clock: FakeClock) -> None:
    key = load_signing_key(Settings())
    here = TokenService(key, TTL, clock, audience="https://events.example.com")
    elsewhere = TokenService(key, TTL, clock, audience="https://other.example.com")
    token = elsewhere.issue("acme", "c", ("publish",)).access_token
    refresh = elsewhere.issue_refresh("acme", "c", ("publish",), "ada")

    with pytest.raises(TokenInvalid, match="not issued for this service"):
        here.verify(token)
    with pytest.raises(TokenInvalid):
        here.verify_refresh(refresh)
    assert here.verify(here.issue("acme", "c", ("publish",)).access_token).client_id == "c"


def test_a_token_without_an_audience_is_invalid(clock: FakeClock) -> None:
    key = load_signing_key(Settings())
    service = TokenService(key, TTL, clock)
    claims = {
        "iss": "replaybus",
        "sub": "c",
        "tid": "acme",
        "scope": "publish",
        "use": "access",
        "iat": NOW,
        "exp": NOW + TTL,
        "jti": "j",
    }
    token = jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key, algorithms=["ES256"])

    with pytest.raises(TokenInvalid):
        service.verify(token)


def test_a_refresh_token_begins_a_family_and_its_successor_continues_it(
    service: TokenService, clock: FakeClock
) -> None:
    first = service.verify_refresh(service.issue_refresh("acme", "c", ("publish",), "ada"))
    other = service.verify_refresh(service.issue_refresh("acme", "c", ("publish",), "ada"))
    clock.advance(100)
    successor = service.verify_refresh(
        service.issue_refresh("acme", "c", ("publish",), "ada", replaces=first)
    )
    third = service.verify_refresh(
        service.issue_refresh("acme", "c", ("publish",), "ada", replaces=successor)
    )

    assert (first.generation, successor.generation, third.generation) == (0, 1, 2)
    assert first.family == successor.family == third.family != other.family
    # A rotated refresh token ends when the one it replaces would have.
    assert successor.principal.expires_at == first.principal.expires_at
    assert third.principal.expires_at == first.principal.expires_at
    assert successor.principal.user == "ada"


def _reissued(key: ECKey, token: str, **changes: object) -> str:
    """`token`'s claims with `changes` (a value of None drops the claim), signed again."""
    claims = {**jwt.decode(token, key).claims, **changes}
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key, algorithms=["ES256"])


def test_a_refresh_token_from_before_families_is_its_own_family_at_generation_0(
    clock: FakeClock,
) -> None:
    key = ECKey.generate_key("P-256", private=True)
    key.ensure_kid()
    service = TokenService(key, TTL, clock)
    issued = service.issue_refresh("acme", "c", ("publish",), "ada")
    legacy = _reissued(key, issued, fam=None, gen=None)

    refresh = service.verify_refresh(legacy)

    assert (refresh.family, refresh.generation) == (jwt.decode(issued, key).claims["jti"], 0)


@pytest.mark.parametrize(
    "lineage", [{"gen": -1}, {"gen": "1"}, {"gen": True}, {"fam": ""}, {"fam": "a b"}]
)
def test_a_refresh_token_with_a_malformed_lineage_is_invalid(
    clock: FakeClock, lineage: dict[str, object]
) -> None:
    key = ECKey.generate_key("P-256", private=True)
    key.ensure_kid()
    service = TokenService(key, TTL, clock)
    token = _reissued(key, service.issue_refresh("acme", "c", ("publish",), "ada"), **lineage)

    with pytest.raises(TokenInvalid):
        service.verify_refresh(token)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tampered(token: str, **changes: object) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(_unb64(payload))
    claims.update(changes)
    return ".".join([header, _b64(json.dumps(claims).encode()), signature])


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"tid": "other-tenant"}, id="tenant"),
        pytest.param({"scope": "publish subscribe admin"}, id="scopes"),
        pytest.param({"exp": NOW + 10 * TTL}, id="expiry"),
    ],
)
def test_tampered_payload_is_invalid(service: TokenService, changes: dict[str, object]) -> None:
    token = service.issue("acme", "c", ("publish",)).access_token

    with pytest.raises(TokenInvalid):
        service.verify(_tampered(token, **changes))


def test_unsigned_token_is_invalid(service: TokenService) -> None:
    token = service.issue("acme", "c", ("publish",)).access_token
    _, payload, _ = token.split(".")
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())

    with pytest.raises(TokenInvalid):
        service.verify(f"{header}.{payload}.")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b.c",
        "a.b",
        "....",
        "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
        "Bearer abc",
        "\x00\xff",
    ],
)
def test_garbage_is_invalid(service: TokenService, token: str) -> None:
    with pytest.raises(TokenInvalid):
        service.verify(token)


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"iss": "someone-else"}, id="foreign-issuer"),
        pytest.param({"tid": ""}, id="empty-tenant"),
        pytest.param({"tid": None}, id="no-tenant"),
        pytest.param({"sub": 7}, id="non-string-client"),
        pytest.param({"scope": ["publish"]}, id="scope-list"),
        pytest.param({"exp": "never"}, id="non-integer-expiry"),
    ],
)
def test_correctly_signed_token_with_bad_claims_is_invalid(
    clock: FakeClock, claims: dict[str, object]
) -> None:
    key = load_signing_key(Settings())
    service = TokenService(key, TTL, clock)
    good: dict[str, object] = {
        "iss": "replaybus",
        "sub": "c",
        "tid": "acme",
        "scope": "publish",
        "iat": NOW,
        "exp": NOW + TTL,
    }
    good.update(claims)
    token = jwt.encode({"alg": "ES256", "kid": key.kid}, good, key, algorithms=["ES256"])

    with pytest.raises(TokenInvalid):
        service.verify(token)


@pytest.mark.parametrize(
    ("make_pem", "algorithm"),
    [(make, alg) for _, make, alg in ACCEPTED_KEYS],
    ids=[name for name, _, _ in ACCEPTED_KEYS],
)
def test_jwks_publishes_one_public_key(make_pem: Callable[[], str], algorithm: str) -> None:
    key = load_signing_key(Settings(signing_key=make_pem()))

    jwks = TokenService(key, TTL, FakeClock()).jwks()

    assert list(jwks) == ["keys"]
    [public] = jwks["keys"]
    assert public["kid"] == key.kid
    assert public["alg"] == algorithm
    assert public["use"] == "sig"
    assert set(public) & {"d", "p", "q", "dp", "dq", "qi"} == set()


def test_default_key_is_ec_p256(service: TokenService) -> None:
    [public] = service.jwks()["keys"]

    assert (public["kty"], public["crv"], public["alg"]) == ("EC", "P-256", "ES256")


@pytest.mark.parametrize(
    "make_pem", [make for _, make, _ in ACCEPTED_KEYS], ids=[name for name, _, _ in ACCEPTED_KEYS]
)
def test_each_accepted_key_type_round_trips(make_pem: Callable[[], str]) -> None:
    key = load_signing_key(Settings(signing_key=make_pem()))
    service = TokenService(key, TTL, FakeClock())

    principal = service.verify(service.issue("acme", "c", ("subscribe",)).access_token)

    assert (principal.tenant, principal.scopes) == ("acme", frozenset({"subscribe"}))


@pytest.mark.parametrize(
    "make_pem", [make for _, make in REFUSED_KEYS], ids=[name for name, _ in REFUSED_KEYS]
)
def test_unusable_keys_are_refused(make_pem: Callable[[], str]) -> None:
    pem = make_pem()

    with pytest.raises(SettingsError, match=r"^REPLAYBUS_SIGNING_KEY: ") as caught:
        load_signing_key(Settings(signing_key=pem))

    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    assert not body or body[:40] not in str(caught.value)


def test_key_is_read_from_file(tmp_path: Path) -> None:
    path = tmp_path / "signing.pem"
    path.write_text(_pem(ed25519.Ed25519PrivateKey.generate(), PKCS8))

    key = load_signing_key(Settings(signing_key_file=str(path)))

    assert TokenService(key, TTL, FakeClock()).jwks()["keys"][0]["alg"] == "Ed25519"


def test_missing_key_file_is_a_settings_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"

    with pytest.raises(SettingsError, match=r"^REPLAYBUS_SIGNING_KEY_FILE: "):
        load_signing_key(Settings(signing_key_file=str(missing)))


def test_key_file_with_garbage_is_a_settings_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.pem"
    path.write_text("junk")

    with pytest.raises(SettingsError):
        load_signing_key(Settings(signing_key_file=str(path)))


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer t", "t"),
        ("bearer t", "t"),
        ("BEARER   t", "t"),
        ("OAuth t", "t"),
        ("oauth t", "t"),
        ("t", "t"),
        ("  Bearer t  ", "t"),
        ("Bearer a.b.c", "a.b.c"),
        ("eyJ.x.y", "eyJ.x.y"),
        (None, None),
        ("", None),
        ("   ", None),
        ("Bearer ", None),
        ("Bearer    ", None),
        ("OAuth ", None),
    ],
)
def test_token_from_header(header: str | None, token: str | None) -> None:
    assert token_from_header(header) == token


def test_a_rotated_out_key_still_verifies_its_tokens_and_is_published() -> None:
    clock = FakeClock()
    old = ECKey.generate_key("P-256", private=True)
    old.ensure_kid()
    new = ECKey.generate_key("P-256", private=True)
    new.ensure_kid()
    before = TokenService(old, 600, clock).issue("t", "c", ("publish",)).access_token

    rotated = TokenService(new, 600, clock, verification_keys=[old])
    without_old = TokenService(new, 600, clock)

    assert rotated.verify(before).client_id == "c"
    with pytest.raises(TokenInvalid):
        without_old.verify(before)
    assert [key["kid"] for key in rotated.jwks()["keys"]] == [new.kid, old.kid]
    assert all("d" not in key for key in rotated.jwks()["keys"])


def test_verification_keys_accept_public_pems_and_name_the_setting_on_garbage() -> None:
    old = ECKey.generate_key("P-256", private=True)
    public_pem = old.as_pem(private=False).decode()
    keys = load_verification_keys(Settings(verification_keys=public_pem + "\n" + public_pem))
    assert len(keys) == 2
    with pytest.raises(SettingsError, match=r"^REPLAYBUS_VERIFICATION_KEYS"):
        load_verification_keys(Settings(verification_keys="not a key"))


def test_a_token_sent_to_the_revoke_endpoint_in_the_query_is_redacted_from_logs() -> None:
    assert redact_query("token=abc&token_type_hint=refresh_token") == (
        "token=[redacted]&token_type_hint=refresh_token"
    )
