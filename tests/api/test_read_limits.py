"""Reads sized in bytes as well as events: a history page holds at most
REPLAYBUS_HISTORY_MAX_BYTES of payloads (or one larger event), and `next` chains the pages so
that every event is read exactly once."""

from __future__ import annotations

from typing import Any

import orjson

from tests.api._support import bearer, running_node

ORDER = "/event/Order__e"
ALL = ["publish", "subscribe"]


async def test_history_pages_stay_within_the_byte_limit_and_chain_through_every_event() -> None:
    async with running_node(history_max_bytes=4096, max_event_size=4096) as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)
        published = []
        for n in range(10):
            response = await node.publish(token, ORDER, {"n": n, "pad": "x" * 980})
            assert response.status_code == 201, response.text
            published.append(response.json()["replayId"])

        pages: list[list[dict[str, Any]]] = []
        after = -2
        while True:
            response = await node.http.get(
                "/v1/events" + ORDER, params={"after": after, "limit": 100}, headers=bearer(token)
            )
            assert response.status_code == 200, response.text
            body = response.json()
            if not body["events"]:
                break
            pages.append(body["events"])
            after = body["next"]
            assert after == body["events"][-1]["replayId"]

    assert [event["replayId"] for page in pages for event in page] == published
    sizes = [[len(orjson.dumps(event["payload"])) for event in page] for page in pages]
    assert all(sum(page) <= 4096 for page in sizes), sizes
    assert [len(page) for page in pages] == [4, 4, 2]
