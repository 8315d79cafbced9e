"""Rotating the signing key without downtime: a node signing with the new key still accepts
tokens the old key signed, when the old key is one of its verification keys."""

from __future__ import annotations

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.server import run_server


def _pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_tokens_of_the_previous_key_stay_valid_during_a_rotation() -> None:
    old, new = _pem(), _pem()
    with (
        run_server({"REPLAYBUS_SIGNING_KEY": old}) as before,
        run_server({"REPLAYBUS_SIGNING_KEY": new, "REPLAYBUS_VERIFICATION_KEYS": old}) as rotated,
        run_server({"REPLAYBUS_SIGNING_KEY": new}) as forgot_the_old_key,
    ):
        old_token = before.token()
        new_token = rotated.token()
        headers = {"Authorization": f"Bearer {old_token}"}
        accepted = httpx.get(rotated.base_url + "/v1/channels/event/R__e", headers=headers)
        refused = httpx.get(
            forgot_the_old_key.base_url + "/v1/channels/event/R__e", headers=headers
        )
        fresh = httpx.get(
            forgot_the_old_key.base_url + "/v1/channels/event/R__e",
            headers={"Authorization": f"Bearer {new_token}"},
        )
        published = httpx.get(rotated.base_url + "/.well-known/jwks.json").json()["keys"]
    assert accepted.status_code == 200
    assert refused.status_code == 401
    assert fresh.status_code == 200
    assert len(published) == 2
