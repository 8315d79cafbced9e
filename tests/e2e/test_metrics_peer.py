"""`/metrics` of a real `replaybus serve` process judges the TCP peer and every address the
request says it was forwarded for: a forged header never opens it, even with every peer trusted
as a proxy (the chart's `FORWARDED_ALLOW_IPS="*"`)."""

from __future__ import annotations

import httpx
import orjson

from tests.e2e.server import run_server

#: Every peer is a trusted proxy, as with the chart's default.
TRUST_EVERY_PEER = {"REPLAYBUS_FORWARDED_ALLOW_IPS": "*"}


def test_a_forged_forwarded_address_does_not_open_metrics_to_a_peer_outside() -> None:
    # The loopback peer is not on the allowed networks; it claims a pod address, and every
    # peer is a trusted proxy (the chart's FORWARDED_ALLOW_IPS="*").
    env = {**TRUST_EVERY_PEER, "REPLAYBUS_METRICS_ALLOWED_NETWORKS": "10.0.0.0/8"}
    with run_server(env) as server:
        for header in (
            {"X-Forwarded-For": "10.1.2.3"},
            {"Forwarded": "for=10.1.2.3"},
            {"X-Real-IP": "10.1.2.3"},
        ):
            forged = httpx.get(server.base_url + "/metrics", headers=header)
            assert forged.status_code == 403, (header, forged.text)
            assert forged.json()["error"] == "forbidden"


def test_metrics_relayed_for_an_outside_client_are_refused_even_from_an_allowed_peer() -> None:
    # An in-cluster ingress controller is an allowed peer; the client it relays is not.
    env = {**TRUST_EVERY_PEER, "REPLAYBUS_METRICS_ALLOWED_NETWORKS": "127.0.0.0/8"}
    with run_server(env) as server:
        direct = httpx.get(server.base_url + "/metrics")
        assert direct.status_code == 200, direct.text
        assert "replaybus_sse_streams" in direct.text
        internal = httpx.get(server.base_url + "/metrics", headers={"X-Forwarded-For": "127.0.0.5"})
        assert internal.status_code == 200, internal.text
        for header in (
            {"X-Forwarded-For": "203.0.113.7"},
            {"X-Forwarded-For": "127.0.0.5, 203.0.113.7"},
            {"X-Forwarded-For": "unknown"},
            {"Forwarded": 'for="[2001:db8::1]:4711"'},
        ):
            relayed = httpx.get(server.base_url + "/metrics", headers=header)
            assert relayed.status_code == 403, (header, relayed.text)


def test_forwarded_addresses_still_name_the_client_for_the_other_routes() -> None:
    # The proxy's X-Forwarded-Proto is still honoured: the token endpoint, which wants HTTPS
    # away from loopback, accepts a client forwarded over HTTPS; and the client's address is
    # the forwarded one (the access log names it).
    env = {
        **TRUST_EVERY_PEER,
        "REPLAYBUS_ACCESS_LOG": "true",
        "REPLAYBUS_LOG_FORMAT": "json",
        "REPLAYBUS_LOG_LEVEL": "info",
    }
    with run_server(env) as server:
        form = {
            "grant_type": "client_credentials",
            "client_id": server.client_id,
            "client_secret": server.client_secret,
        }
        relayed = httpx.post(
            server.base_url + "/services/oauth2/token",
            data=form,
            headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"},
        )
        assert relayed.status_code == 200, relayed.text
        assert relayed.json()["instance_url"].startswith("https://")
        output = server.output
    # The server has stopped: its output is complete.
    logged = [orjson.loads(line) for line in output if line.startswith("{")]
    clients = [
        line["client"]
        for line in logged
        if line.get("logger") == "replaybus.access"
        and line.get("route") == "/services/oauth2/token"
    ]
    assert len(clients) == 1, clients
    assert clients[0].startswith("203.0.113.7:"), clients
