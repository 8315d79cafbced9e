"""Behind a real nginx (which appends the address it received each request from to
`X-Forwarded-For`), a node trusting every peer as a proxy counts the token endpoint's
per-address limit against that address, whatever the caller wrote to its left."""

from __future__ import annotations

import httpx

from tests.e2e.server import run_server
from tests.harness.nginx import running_nginx

BURST = 2
REQUESTS = 20  # at one request per second of refill, far more than can be sent in that time


def test_the_address_limit_counts_the_address_nginx_saw_not_the_forged_ones() -> None:
    env = {
        "REPLAYBUS_FORWARDED_ALLOW_IPS": "*",
        "REPLAYBUS_TOKEN_BURST_PER_ADDRESS": str(BURST),
        "REPLAYBUS_TOKEN_RATE_PER_ADDRESS": "1",
    }
    with run_server(env) as server, running_nginx([server.base_url]) as balancer:
        form = {"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"}
        with httpx.Client(base_url=balancer.base_url) as client:
            answers = [
                client.post(
                    "/services/oauth2/token",
                    data=form,
                    headers={"X-Forwarded-For": f"192.0.2.{n}"},
                )
                for n in range(REQUESTS)
            ]

    statuses = [answer.status_code for answer in answers]
    assert statuses[:BURST] == [400] * BURST
    assert {answer.json()["error"] for answer in answers[:BURST]} == {"invalid_client"}
    limited = [answer for answer in answers if answer.status_code == 429]
    assert limited, statuses
    assert "this address" in limited[0].json()["error_description"]
