from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.server import RunningServer, run_server


@pytest.fixture(scope="session")
def signing_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="session")
def server(signing_key_pem: str) -> Iterator[RunningServer]:
    """One server on embedded defaults for the whole session; tests use their own channels."""
    with run_server({"REPLAYBUS_SIGNING_KEY": signing_key_pem}) as running:
        yield running


@pytest.fixture(scope="session")
def token(server: RunningServer) -> str:
    return server.token()
