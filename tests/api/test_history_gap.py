"""The history pull reports a position it cannot resume from in its `gap` object (README,
"Resuming"): `requested` is the `after` asked for, `earliest` and `latest` the window's, and the
page goes on from the oldest retained event."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api._support import Node, bearer

ORDER = "/event/Order__e"
KEPT = 3  # the tenant's retentionMaxCount


async def _evicting_channel(node: Node) -> tuple[str, list[int], dict[str, Any]]:
    """A token, the ReplayIds of 7 events of which the window keeps KEPT, and the window."""
    await node.create_tenant("acme", {"retentionMaxCount": KEPT})
    token = await node.client_token("acme", ["publish", "subscribe"])
    published = []
    for n in range(7):
        response = await node.publish(token, ORDER, {"n": n})
        assert response.status_code == 201, response.text
        published.append(int(response.json()["replayId"]))
    response = await node.window(token, ORDER)
    assert response.status_code == 200, response.text
    window: dict[str, Any] = response.json()
    assert (window["earliest"], window["latest"], window["lowWaterMark"]) == (
        published[-KEPT],
        published[-1],
        published[-KEPT - 1],
    )
    return token, published, window


async def _page(node: Node, token: str, after: int) -> dict[str, Any]:
    response = await node.http.get(
        "/v1/events" + ORDER, params={"after": after}, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


@pytest.mark.parametrize("where", ["below the low-water mark", "above the top"])
async def test_history_after_an_unresumable_position_reports_the_gap(
    node: Node, where: str
) -> None:
    token, published, window = await _evicting_channel(node)
    after = published[0] if where == "below the low-water mark" else window["latest"] + 1

    page = await _page(node, token, after)

    assert page["gap"] == {
        "requested": after,
        "earliest": window["earliest"],
        "latest": window["latest"],
    }
    assert [event["replayId"] for event in page["events"]] == published[-KEPT:]
    assert page["next"] == published[-1]


async def test_history_from_the_low_water_mark_itself_reports_no_gap(node: Node) -> None:
    """The newest evicted event's id is a resumable position: nothing after it was lost."""
    token, published, window = await _evicting_channel(node)

    page = await _page(node, token, window["lowWaterMark"])

    assert "gap" not in page
    assert [event["replayId"] for event in page["events"]] == published[-KEPT:]
