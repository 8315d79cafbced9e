"""Long-poll soak: 200 concurrent Bayeux clients on one channel, 2000 events published through
REST, every client receives every event exactly once, in order.

The driver is the cheapest faithful one: a single Node process (`tests/node/soak.mjs`) running
200 instances of the official CometD JavaScript client, each with its own handshake, long-poll
`/meta/connect` cycle and replay extension, subscribed with -1. Each client folds the ReplayIds
it receives into a SHA-256 digest ("id1,id2,…,") and checks they only increase; the test compares
every digest with the digest of the acknowledged ReplayIds in order, so a lost, duplicated or
reordered event fails it. Four REST publishers race, each posting batches of 50 (a JSON array
body), so connect replies carry batches of events and holds wake under concurrent publishes.
Its own server, so the shared one is not loaded; bounded by the script's deadline and the
test's timeouts (a run takes a few seconds on 2 cores).

Checklist lines (reference/salesforce-streaming.md §7): 10 not reached (200 of 2000 clients),
11, 13, 14 (order per client across many connect replies), 17, 24 (-1), 27, 33 (every capped
reply is read by the default CometD JS client), 34 (200 disconnects at the end).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.bayeux_node import Record, install_node_packages, node_script
from tests.e2e.bayeux_publish import API_VERSION, publish_batches
from tests.e2e.server import run_server
from tests.e2e.sse import channel_name

CLIENTS = 200
EVENTS = 2000
BATCH = 50
PUBLISHERS = 4
DEADLINE = 45.0  # the soak script gives up by itself after this many seconds


@pytest.fixture(scope="session")
def node_dir() -> Path:
    return install_node_packages()


def digest(replay_ids: list[int]) -> str:
    return hashlib.sha256("".join(f"{replay_id}," for replay_id in replay_ids).encode()).hexdigest()


@pytest.mark.timeout(90)
async def test_every_client_receives_every_event_exactly_once_in_order(node_dir: Path) -> None:
    channel = channel_name()
    with run_server() as server:
        token = server.token()
        arguments = [
            f"--url={server.base_url}",
            f"--channel={channel}",
            f"--clients={CLIENTS}",
            f"--count={EVENTS}",
            f"--version={API_VERSION}",
            f"--deadline-ms={int(DEADLINE * 1000)}",
        ]
        async with (
            node_script("soak.mjs", arguments, token, node_dir) as run,
            httpx.AsyncClient(timeout=30) as http,
        ):
            ready = await run.wait_for(lambda record: record["type"] in ("ready", "done"), DEADLINE)
            assert ready["type"] == "ready", run.describe()
            acks = await publish_batches(
                http,
                server.base_url,
                token,
                channel,
                EVENTS,
                batch_size=BATCH,
                publishers=PUBLISHERS,
            )
            records = await run.finish(DEADLINE + 15)

    published = [int(ack["replayId"]) for ack in acks]
    expected = digest(published)
    clients: list[Record] = [record for record in records if record["type"] == "client"]
    wrong = [
        record
        for record in clients
        if (record["received"], record["ordered"], record["digest"], record["extra"])
        != (EVENTS, True, expected, 0)
    ]
    delivered = (
        f"{len(clients) - len(wrong)} of {CLIENTS} clients received all {EVENTS} events "
        "exactly once, in order"
    )
    # Failed handshakes, subscribes, connects or disconnects, as the clients reported them. A
    # connect that crossed its own client's /meta/disconnect at the end is answered "Unknown
    # client" by design (the session is gone): that is the protocol, not a failure.
    failures = Counter(
        (
            record["kind"],
            record["message"].get("error") or record["message"].get("failure", {}).get("reason"),
        )
        for record in records
        if record["type"] == "meta"
        and not (
            record.get("finishing")
            and record["kind"] == "connect"
            and record["message"].get("error") == "403::Unknown client"
        )
    )
    assert not failures, f"failed Bayeux requests (kind, error): {dict(failures)}; {delivered}"
    assert run.returncode == 0, run.describe()
    [done] = [record for record in records if record["type"] == "done"]
    assert done["reason"] == "count", run.describe()
    assert sorted(record["client"] for record in clients) == list(range(CLIENTS))
    assert wrong == [], f"{delivered}; for example {wrong[:5]}"
    assert {(record["first"], record["last"]) for record in clients} == {
        (published[0], published[-1])
    }
