"""The JavaScript clients in a real browser against a real server.

Debian's headless Chromium, driven by playwright-core (`driver.mjs`), opens a test page served
from another origin than the server (a second loopback port; the server lists that origin in
`REPLAYBUS_CORS_ALLOWED_ORIGINS`). The page imports the product files `clients/js/replaybus.js`
and `clients/js/cometd-replay.js`, and the official CometD client's ES modules, subscribes, and
reports what it receives, which the driver prints as JSON lines.

Every wait has a deadline; no test sleeps. Streams end by themselves: the server of these
tests issues tokens that live 10 s, and ends each stream when its token expires.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.browser.harness import (
    PageServer,
    browser_records,
    invalid_token,
    publish,
    publish_then_token,
    run_driver,
    valid_token,
)
from tests.e2e.bayeux_node import NodeRun, Record
from tests.e2e.server import CLIENT_ID, RunningServer
from tests.e2e.sse import channel_name

DEADLINE = 20.0  # seconds a page may take before the driver gives up by itself
EXPIRY_DEADLINE = 45.0  # the same for a page that waits for its tokens (10 s) to expire
WAIT = 10.0  # how long a test waits for one more record of a page that is not waiting
WAIT_EXPIRY = 30.0  # the same across a token expiry (10 s), the browser's retry and backoff


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def payloads(start: int, stop: int) -> list[dict[str, int]]:
    return [{"n": n} for n in range(start, stop)]


def envelope(ack: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
    """The SSE `data:` the server sends for the event `ack` acknowledged."""
    fields = ("channel", "replayId", "uuid", "createdDate")
    return {**{key: ack[key] for key in fields}, "schema": None, "payload": dict(payload)}


def sse_argument(server: RunningServer, *subscriptions: Mapping[str, Any]) -> dict[str, Any]:
    return {"baseUrl": server.base_url, "subscriptions": list(subscriptions)}


def is_event(sub: str, replay_id: int) -> Any:
    def predicate(record: Record) -> bool:
        return bool(
            record["type"] == "event"
            and record["sub"] == sub
            and record["envelope"]["replayId"] == replay_id
        )

    return predicate


def finished(run: NodeRun, records: Sequence[Record]) -> None:
    assert run.returncode == 0, run.describe()
    assert [record["type"] for record in records].count("done") == 1, run.describe()
    assert browser_records(records, "pageerror") == [], run.describe()


def streams(records: Sequence[Record], channel: str) -> list[tuple[int, str | None, str | None]]:
    """The page's stream requests on `channel`, as the browser sent them: each response's
    status, the `replayId` of the URL and the `Last-Event-ID` header."""
    answered = []
    for record in browser_records(records, "http"):
        url = urlsplit(record["url"])
        if url.path == f"/v1/stream{channel}":
            replay = parse_qs(url.query).get("replayId", [None])[0]
            answered.append((int(record["status"]), replay, record["lastEventId"]))
    return answered


async def test_retained_then_live_events_arrive_in_order_in_the_browser(
    node_dir: Path, chromium: Path, pages: PageServer, browser_server: RunningServer
) -> None:
    channel = channel_name()
    retained = await publish(browser_server, channel, payloads(0, 3))
    sub = name("order")
    pages.plan_tokens(sub, browser_server, [])
    spec = {"name": sub, "channel": channel, "from": -2, "until": {"events": 5}}
    async with run_driver(
        node_dir, chromium, pages.origin + "/", "runSse", sse_argument(browser_server, spec),
        DEADLINE,
    ) as run:  # fmt: skip
        await run.wait_for(is_event(sub, retained[-1]["replayId"]), WAIT)
        live = await publish(browser_server, channel, payloads(3, 4))
        live += await publish(browser_server, channel, payloads(4, 5))
        records = await run.finish(WAIT)

    finished(run, records)
    acks = retained + live
    events = browser_records(records, "event", sub=sub)
    assert [event["envelope"] for event in events] == [
        envelope(ack, payload) for ack, payload in zip(acks, payloads(0, 5), strict=True)
    ]
    assert [event["id"] for event in events] == [str(ack["replayId"]) for ack in acks]
    [opened] = browser_records(records, "open", sub=sub)
    assert (opened["replayId"], opened["reconnected"]) == (-2, False)
    assert browser_records(records, "error", sub=sub) == []
    [closed] = browser_records(records, "closed", sub=sub)
    assert closed["lastEventId"] == acks[-1]["replayId"]
    assert streams(records, channel) == [(200, "-2", None)]


async def test_the_helper_resumes_with_a_fresh_token_when_the_server_refuses_or_ends_a_stream(
    node_dir: Path, chromium: Path, pages: PageServer, browser_server: RunningServer
) -> None:
    """Three subscriptions in one page, all through the server's end of their streams when
    their tokens expire (the browser then reconnects by itself with the expired token, is
    refused with 401, and the helper takes over with a fresh token):

    - `a`, from -2: its first token is refused, so the helper must retry with a fresh one;
      while the page waits for its token after the expiry, two events are published. It gets
      every event once, in order: retained, live, published while it had no stream, live.
    - `b`, from -1 on a channel with one old event and nothing new until its stream ended:
      the event published while it had no stream arrives (resumed from its first position,
      not from "new events only"), the old one never does.
    - `w`, a wildcard stream (live-only): reconnected by the helper, it gets a gap saying that
      what was published meanwhile was not replayed.
    """
    channel_a, channel_b = channel_name(), channel_name()
    sub_a, sub_b, sub_w = name("a"), name("b"), name("w")
    retained_a = await publish(browser_server, channel_a, payloads(0, 3))
    [old_b] = await publish(browser_server, channel_b, payloads(0, 1))
    outage_a: list[dict[str, Any]] = []
    outage_b: list[dict[str, Any]] = []
    pages.plan_tokens(
        sub_a,
        browser_server,
        [invalid_token, valid_token, publish_then_token(channel_a, payloads(4, 6), outage_a)],
    )
    pages.plan_tokens(
        sub_b,
        browser_server,
        [valid_token, publish_then_token(channel_b, payloads(1, 2), outage_b)],
    )
    pages.plan_tokens(sub_w, browser_server, [])
    argument = sse_argument(
        browser_server,
        {"name": sub_a, "channel": channel_a, "from": -2, "until": {"events": 7}},
        {"name": sub_b, "channel": channel_b, "from": -1, "until": {"events": 1}},
        {"name": sub_w, "channel": "/event/*", "from": -1, "until": {"gaps": 1}},
    )
    async with run_driver(
        node_dir, chromium, pages.origin + "/", "runSse", argument, EXPIRY_DEADLINE
    ) as run:
        await run.wait_for(is_event(sub_a, retained_a[-1]["replayId"]), WAIT)
        live_a = await publish(browser_server, channel_a, payloads(3, 4))
        last_before = live_a[0]["replayId"]
        await run.wait_for(is_event(sub_a, last_before), WAIT)

        def resumed(record: Record) -> bool:
            return bool(
                record["type"] == "open" and record["sub"] == sub_a and record["reconnected"]
            )

        reopened = await run.wait_for(resumed, WAIT_EXPIRY)
        live_a += await publish(browser_server, channel_a, payloads(6, 7))
        records = await run.finish(WAIT_EXPIRY)

    finished(run, records)
    # a: everything once, in order, across a refused first token and the server's end.
    acks_a = [*retained_a, live_a[0], *outage_a, live_a[1]]
    assert [ack["replayId"] for ack in acks_a] == sorted(ack["replayId"] for ack in acks_a)
    events_a = browser_records(records, "event", sub=sub_a)
    assert [event["envelope"] for event in events_a] == [
        envelope(ack, payload) for ack, payload in zip(acks_a, payloads(0, 7), strict=True)
    ], run.describe()
    assert pages.token_requests(sub_a) == 3  # refused, first stream, after the expiry
    assert (reopened["byBrowser"], reopened["replayId"]) == (False, last_before)
    opens_a = browser_records(records, "open", sub=sub_a)
    assert [(r["replayId"], r["reconnected"]) for r in opens_a] == [
        (-2, False),
        (last_before, True),
    ]
    assert streams(records, channel_a) == [
        (401, "-2", None),  # the invalid token
        (200, "-2", None),  # the helper's retry with a fresh token
        (401, "-2", str(last_before)),  # the browser's own reconnect, with the expired token
        (200, str(last_before), None),  # the helper: a fresh token, from the last event seen
    ]
    errors_a = browser_records(records, "error", sub=sub_a)
    assert [(e["phase"], e["retryIn"] is None) for e in errors_a] == [
        ("stream", False),  # refused: the helper retries after a backoff
        ("stream", True),  # ended by the server: the browser reconnects by itself
        ("stream", False),  # refused again: the helper takes over
    ]
    [closed_a] = browser_records(records, "closed", sub=sub_a)
    assert closed_a["lastEventId"] == live_a[1]["replayId"]

    # b: what was published while it had no stream arrives; the older event does not.
    events_b = browser_records(records, "event", sub=sub_b)
    assert [event["envelope"] for event in events_b] == [envelope(outage_b[0], {"n": 1})]
    assert pages.token_requests(sub_b) == 2
    assert [r["replayId"] for r in browser_records(records, "open", sub=sub_b)] == [
        old_b["replayId"],
        old_b["replayId"],
    ]
    assert streams(records, channel_b) == [
        (200, str(old_b["replayId"]), None),
        (401, str(old_b["replayId"]), str(old_b["replayId"])),  # the server's opening `id:`
        (200, str(old_b["replayId"]), None),
    ]
    [closed_b] = browser_records(records, "closed", sub=sub_b)
    assert closed_b["lastEventId"] == outage_b[0]["replayId"]

    # w: a wildcard stream cannot resume; the helper says so instead of staying silent.
    [gap_w] = browser_records(records, "gap", sub=sub_w)
    assert gap_w["gap"]["requested"] is None
    assert gap_w["gap"]["earliest"] is None
    assert gap_w["gap"]["latest"] is None
    assert "not replayed" in gap_w["gap"]["reason"]
    opens_w = browser_records(records, "open", sub=sub_w)
    assert [(r["reconnected"], r["byBrowser"]) for r in opens_w] == [(False, False), (True, False)]


async def test_on_gap_fires_when_from_is_below_the_retention_window(
    node_dir: Path, chromium: Path, pages: PageServer, small_window_server: RunningServer
) -> None:
    channel = channel_name()
    acks = await publish(small_window_server, channel, payloads(0, 6))  # the newest 3 remain
    sub = name("gap")
    pages.plan_tokens(sub, small_window_server, [])
    spec = {
        "name": sub,
        "channel": channel,
        "from": acks[0]["replayId"],
        "until": {"events": 3, "gaps": 1},
    }
    async with run_driver(
        node_dir, chromium, pages.origin + "/", "runSse",
        sse_argument(small_window_server, spec), DEADLINE,
    ) as run:  # fmt: skip
        records = await run.finish(WAIT + DEADLINE)

    finished(run, records)
    [gap] = browser_records(records, "gap", sub=sub)
    assert gap["gap"] == {
        "requested": acks[0]["replayId"],
        "earliest": acks[3]["replayId"],
        "latest": acks[5]["replayId"],
    }
    events = browser_records(records, "event", sub=sub)
    assert [event["envelope"] for event in events] == [
        envelope(ack, payload) for ack, payload in zip(acks[3:], payloads(3, 6), strict=True)
    ]
    assert gap["seq"] < events[0]["seq"]  # the gap is reported before what follows it
    [closed] = browser_records(records, "closed", sub=sub)
    assert closed["lastEventId"] == acks[5]["replayId"]


async def _reload_under_a_checkpointed_stream(
    node_dir: Path,
    chromium: Path,
    pages: PageServer,
    server: RunningServer,
    *,
    first: Mapping[str, Any],
    published_after: int,
) -> tuple[list[Any], list[Any], NodeRun, list[Record], str]:
    """Three events published, a page subscribed with `checkpoint: true` from `-2` taking
    them (`first`: more of its options), reloaded under its open stream, `published_after`
    more events published, and the same subscription again taking two. Returns the acks
    before and after, the run, its records and the subscription's name."""
    channel = channel_name()
    before = await publish(server, channel, payloads(0, 3))
    sub = name("checkpoint")
    pages.plan_tokens(sub, server, [])
    spec = {"baseUrl": server.base_url, "name": sub, "channel": channel, "from": -2}
    async with run_driver(
        node_dir, chromium, pages.origin + "/", "runCheckpointed",
        {**spec, "count": 3, **first}, DEADLINE, then=("runCheckpointed", {**spec, "count": 2}),
    ) as run:  # fmt: skip
        await run.wait_for(lambda record: record["type"] == "reloaded", WAIT)
        after = await publish(server, channel, payloads(3, 3 + published_after))
        records = await run.finish(WAIT)
    finished(run, records)
    return before, after, run, records, sub


async def test_a_persistent_checkpoint_resumes_after_a_page_reload(
    node_dir: Path, chromium: Path, pages: PageServer, browser_server: RunningServer
) -> None:
    """`checkpoint: true` keeps the position in localStorage: the page processes the retained
    events, is reloaded under its open stream, and the same subscription (`from: -2` again)
    resumes after the last event processed: it gets only what was published since."""
    before, after, run, records, sub = await _reload_under_a_checkpointed_stream(
        node_dir, chromium, pages, browser_server, first={}, published_after=2
    )

    [reloaded] = browser_records(records, "reloaded")
    events = browser_records(records, "event", sub=sub)
    acks = before + after
    assert [event["envelope"] for event in events] == [
        envelope(ack, payload) for ack, payload in zip(acks, payloads(0, 5), strict=True)
    ], run.describe()
    assert [event["seq"] < reloaded["seq"] for event in events] == [True] * 3 + [False] * 2
    last_processed = before[-1]["replayId"]
    opens = browser_records(records, "open", sub=sub)
    assert [(r["replayId"], r["reconnected"]) for r in opens] == [
        (-2, False),
        (last_processed, False),
    ]
    channel = before[0]["channel"]
    assert streams(records, channel) == [(200, "-2", None), (200, str(last_processed), None)]
    assert browser_records(records, "error", sub=sub) == []


async def test_a_position_is_saved_only_once_the_promise_of_its_event_settled(
    node_dir: Path, chromium: Path, pages: PageServer, browser_server: RunningServer
) -> None:
    """An `onEvent` still processing its event (a promise not yet settled) at the reload: the
    saved position is the event before it, so the reloaded page gets that event again."""
    before, after, run, records, sub = await _reload_under_a_checkpointed_stream(
        node_dir, chromium, pages, browser_server, first={"holdLast": True}, published_after=1
    )

    opens = browser_records(records, "open", sub=sub)
    assert [r["replayId"] for r in opens] == [-2, before[1]["replayId"]], run.describe()
    events = [event["envelope"]["replayId"] for event in browser_records(records, "event", sub=sub)]
    assert events == [
        *(ack["replayId"] for ack in before),
        before[2]["replayId"],
        after[0]["replayId"],
    ]


def cometd_records(records: Sequence[Record], kind: str, phase: str) -> list[Record]:
    return browser_records(records, kind, phase=phase)


def salesforce_event(ack: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
    """A delivered CometD message, as the server sends it (API 58.0)."""
    return {
        "channel": ack["channel"],
        "data": {
            "schema": None,
            "payload": {**payload, "CreatedDate": ack["createdDate"], "CreatedById": CLIENT_ID},
            "event": {"replayId": ack["replayId"], "EventUuid": ack["uuid"]},
        },
    }


async def test_the_cometd_client_in_the_browser_replays_and_resumes_with_the_extension(
    node_dir: Path, chromium: Path, pages: PageServer, browser_server: RunningServer
) -> None:
    """The official CometD client (its ES modules, served to the page) with the product's
    replay extension, cross-origin: from -2 it gets the retained events then a live one; a
    second client given a ReplayId gets exactly the events after it."""
    channel = channel_name()
    retained = await publish(browser_server, channel, payloads(0, 3))
    first, second, barrier = name("cometd-2"), name("cometd-n"), name("barrier")
    pages.plan_tokens(first, browser_server, [])
    pages.plan_tokens(second, browser_server, [])
    argument = {
        "baseUrl": browser_server.base_url,
        "channel": channel,
        "phases": [
            {"name": first, "replay": -2, "count": 4},
            {"name": second, "replay": retained[-1]["replayId"], "count": 3, "waitFor": barrier},
        ],
    }

    def subscribed(record: Record) -> bool:
        return bool(
            record["type"] == "cometd-meta"
            and record["phase"] == first
            and record["kind"] == "subscribe"
        )

    def first_done(record: Record) -> bool:
        return bool(record["type"] == "cometd-done" and record["phase"] == first)

    async with run_driver(
        node_dir, chromium, pages.origin + "/", "runCometd", argument, DEADLINE
    ) as run:
        reply = await run.wait_for(subscribed, WAIT)
        assert reply["message"]["successful"] is True, run.describe()
        live = await publish(browser_server, channel, payloads(3, 4))
        await run.wait_for(first_done, WAIT)
        later = await publish(browser_server, channel, payloads(4, 6))
        pages.release(barrier)
        records = await run.finish(WAIT)

    finished(run, records)
    metas = cometd_records(records, "cometd-meta", first)
    [handshake] = [r["message"] for r in metas if r["kind"] == "handshake"]
    assert handshake["successful"] is True
    assert handshake["ext"] == {"replay": True, "payload.format": True}

    acks = [*retained, *live, *later]
    expected = [salesforce_event(ack, p) for ack, p in zip(acks, payloads(0, 6), strict=True)]
    assert [r["message"] for r in cometd_records(records, "cometd-event", first)] == expected[:4]
    [done_first] = cometd_records(records, "cometd-done", first)
    assert done_first["replay"] == live[0]["replayId"]  # the extension tracked the last event
    assert done_first["disconnect"]["successful"] is True

    assert [r["message"] for r in cometd_records(records, "cometd-event", second)] == expected[3:]
    [done_second] = cometd_records(records, "cometd-done", second)
    assert done_second["replay"] == later[-1]["replayId"]
