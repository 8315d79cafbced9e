"""Client secrets are stored as salted scrypt hashes and checked without raising."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from app.credentials import generate_client_id, generate_secret, hash_secret, verify_secret

SECRET = "correct horse battery staple"


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_secret(SECRET)


def test_hash_has_the_documented_shape(stored: str) -> None:
    assert re.fullmatch(r"scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}", stored)
    assert SECRET not in stored


def test_right_secret_verifies(stored: str) -> None:
    assert verify_secret(SECRET, stored) is True


@pytest.mark.parametrize(
    "attempt",
    ["", "correct horse battery stapl", "correct horse battery staple ", "CORRECT HORSE"],
)
def test_wrong_secret_does_not_verify(stored: str, attempt: str) -> None:
    assert verify_secret(attempt, stored) is False


def test_two_hashes_of_the_same_secret_differ_by_salt() -> None:
    first, second = hash_secret(SECRET), hash_secret(SECRET)

    assert first != second
    assert first.split("$")[4] != second.split("$")[4]
    assert verify_secret(SECRET, first)
    assert verify_secret(SECRET, second)


def test_unicode_secret_round_trips() -> None:
    assert verify_secret("pässwörd-✓", hash_secret("pässwörd-✓")) is True


def _with_part(stored: str, index: int, value: str) -> str:
    parts = stored.split("$")
    parts[index] = value
    return "$".join(parts)


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda s: "", id="empty"),
        pytest.param(lambda s: SECRET, id="plaintext"),
        pytest.param(lambda s: s.rsplit("$", 1)[0], id="missing-digest"),
        pytest.param(lambda s: s + "$extra", id="extra-part"),
        pytest.param(lambda s: _with_part(s, 0, "bcrypt"), id="other-scheme"),
        pytest.param(lambda s: _with_part(s, 1, "abc"), id="non-integer-cost"),
        pytest.param(lambda s: _with_part(s, 1, "1000"), id="cost-not-power-of-two"),
        pytest.param(lambda s: _with_part(s, 4, "YWJ"), id="salt-bad-base64-padding"),
        pytest.param(lambda s: _with_part(s, 5, "!!!"), id="digest-not-base64"),
        pytest.param(lambda s: _with_part(s, 5, ""), id="empty-digest"),
    ],
)
def test_malformed_stored_hash_does_not_verify(stored: str, corrupt: Callable[[str], str]) -> None:
    assert verify_secret(SECRET, corrupt(stored)) is False


def test_generated_secrets_and_client_ids_are_fresh() -> None:
    assert generate_secret() != generate_secret()
    assert len(generate_secret()) >= 43
    assert re.fullmatch(r"rb_[0-9a-f]{24}", generate_client_id())
