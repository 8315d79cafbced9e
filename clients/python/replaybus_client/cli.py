"""`replaybus token`, `replaybus publish` and `replaybus tail`: a stream from a terminal.

Each takes `--url` (REPLAYBUS_URL) and client credentials `--client-id` / `--client-secret`
(REPLAYBUS_CLIENT_ID / REPLAYBUS_CLIENT_SECRET) or a ready `--token` (REPLAYBUS_TOKEN).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TextIO

import httpx

from replaybus_client.auth import ClientCredentials, StaticToken, TokenSource
from replaybus_client.errors import Gap, ReplaybusClientError
from replaybus_client.publisher import Ack, Publisher
from replaybus_client.subscriber import ALL_RETAINED, NEW_ONLY, Subscriber
from replaybus_client.wire import Event, channel_top

__all__ = ["add_stream_commands", "run_stream_command"]

_DEFAULT_URL = "http://127.0.0.1:8080"
_BATCH = 500  # events per request when publishing stdin lines


class CommandError(Exception):
    pass


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"server base URL (REPLAYBUS_URL, default {_DEFAULT_URL})")
    parser.add_argument("--client-id", help="OAuth client id (REPLAYBUS_CLIENT_ID)")
    parser.add_argument("--client-secret", help="its secret (REPLAYBUS_CLIENT_SECRET)")
    parser.add_argument("--token", help="an access token instead (REPLAYBUS_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def add_stream_commands(commands: Any) -> None:
    token = commands.add_parser("token", help="get an access token (client credentials)")
    _common(token)
    publish = commands.add_parser(
        "publish", help="publish one event, or one per line of stdin (batched, with progress)"
    )
    _common(publish)
    publish.add_argument("channel", help="e.g. /event/Order_Placed__e")
    publish.add_argument("payload", nargs="?", default="-", help="a JSON object, or - for stdin")
    tail = commands.add_parser("tail", help="follow a channel, resuming after interruptions")
    _common(tail)
    tail.add_argument("channel", help="e.g. /event/Order_Placed__e or /event/*")
    tail.add_argument(
        "--from",
        dest="start",
        default="-1",
        help="-1 new events (default), -2 all retained, a ReplayId, or an ISO time",
    )
    tail.add_argument(
        "--transport",
        choices=("sse", "bayeux", "history"),
        default="sse",
        help="a stream (default), CometD long-polling, or history pulls",
    )
    tail.add_argument("--count", type=int, help="stop after this many events")


def _base_url(arguments: argparse.Namespace, environ: Mapping[str, str]) -> str:
    return str(arguments.url or environ.get("REPLAYBUS_URL") or _DEFAULT_URL).rstrip("/")


def _tokens(arguments: argparse.Namespace, environ: Mapping[str, str]) -> TokenSource:
    token = arguments.token or environ.get("REPLAYBUS_TOKEN")
    if token:
        return StaticToken(token)
    client_id = arguments.client_id or environ.get("REPLAYBUS_CLIENT_ID")
    secret = arguments.client_secret or environ.get("REPLAYBUS_CLIENT_SECRET")
    if not client_id or not secret:
        raise CommandError(
            "no credentials: pass --client-id and --client-secret (or set REPLAYBUS_CLIENT_ID "
            "and REPLAYBUS_CLIENT_SECRET), or --token / REPLAYBUS_TOKEN"
        )
    return ClientCredentials(_base_url(arguments, environ), client_id, secret)


def start_position(text: str) -> int:
    """`-1`, `-2`, a ReplayId, or an ISO 8601 time: ReplayIds are microseconds since the epoch
    (or just above, after a burst), so the events from a time on are those after it, minus one."""
    if text in ("-1", "-2"):
        return NEW_ONLY if text == "-1" else ALL_RETAINED
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(
            f"--from takes -1, -2, a ReplayId or an ISO time, not {text!r}"
        ) from None
    if moment.tzinfo is None:
        raise CommandError(f"--from {text}: give the time zone, e.g. {text}Z")
    return max(0, int(moment.timestamp() * 1_000_000) - 1)


async def _token(arguments: argparse.Namespace, environ: Mapping[str, str]) -> int:
    tokens = _tokens(arguments, environ)
    async with httpx.AsyncClient(timeout=30) as http:
        token = await tokens.token(http)
    print(json.dumps({"access_token": token}) if arguments.json else token)
    return 0


def _payload(text: str, where: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise CommandError(f"{where}: not JSON ({error})") from None
    if not isinstance(payload, dict):
        raise CommandError(f"{where}: an event payload is a JSON object")
    return payload


class _Progress:
    """`published N events (R/s)` on stderr, rewritten in place when it is a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._started = time.monotonic()
        self._shown = 0.0
        self.count = 0

    def advance(self, count: int, *, final: bool = False) -> None:
        self.count += count
        now = time.monotonic()
        if not final and now - self._shown < 0.2:
            return
        self._shown = now
        rate = self.count / max(now - self._started, 1e-6)
        line = f"published {self.count} events ({rate:.0f}/s)"
        if self._stream.isatty():
            self._stream.write("\r" + line + ("\n" if final else ""))
        elif final:
            self._stream.write(line + "\n")
        self._stream.flush()


async def _publish(arguments: argparse.Namespace, environ: Mapping[str, str]) -> int:
    base = _base_url(arguments, environ)
    async with Publisher(base, _tokens(arguments, environ)) as publisher:
        if arguments.payload != "-":
            ack = await publisher.publish(arguments.channel, _payload(arguments.payload, "payload"))
            print(json.dumps(_ack_json(ack)) if arguments.json else ack.replay_id)
            return 0
        progress = _Progress(sys.stderr)
        batch: list[dict[str, Any]] = []
        for number, line in enumerate(sys.stdin, start=1):
            if not line.strip():
                continue
            batch.append(_payload(line, f"line {number}"))
            if len(batch) == _BATCH:
                await _send(publisher, arguments, batch, progress)
                batch = []
        if batch:
            await _send(publisher, arguments, batch, progress)
        progress.advance(0, final=True)
    return 0


def _ack_json(ack: Ack) -> dict[str, Any]:
    return {
        "channel": ack.channel,
        "replayId": ack.replay_id,
        "uuid": ack.uuid,
        "createdDate": ack.created_date,
        "duplicate": ack.duplicate,
    }


async def _send(
    publisher: Publisher,
    arguments: argparse.Namespace,
    batch: list[dict[str, Any]],
    progress: _Progress,
) -> None:
    acks = await publisher.publish_batch(arguments.channel, batch)
    if arguments.json:
        for ack in acks:
            print(json.dumps(_ack_json(ack)))
    progress.advance(len(acks))


def _event_json(event: Event) -> dict[str, Any]:
    return {
        "channel": event.channel,
        "replayId": event.replay_id,
        "uuid": event.uuid,
        "createdDate": event.created_date,
        "schema": event.schema,
        "payload": event.payload,
    }


async def _tail(arguments: argparse.Namespace, environ: Mapping[str, str]) -> int:
    def on_gap(gap: Gap) -> None:
        if gap.requested is None:
            where = gap.channels or gap.channel
            text = f"gap: events on {where} may have been missed: {gap.reason}"
        else:
            resumed = gap.earliest if gap.earliest is not None else "the oldest retained"
            text = (
                f"gap: events after {gap.requested} are no longer retained; resuming from {resumed}"
            )
        if arguments.json:
            print(json.dumps({"gap": dataclasses.asdict(gap)}), flush=True)
        print(text, file=sys.stderr, flush=True)

    start = start_position(arguments.start)
    tokens = _tokens(arguments, environ)
    base = _base_url(arguments, environ)
    if start >= 0 and not arguments.start.isdigit() and "*" not in arguments.channel:
        # A time after the newest event means "from now on", not a position the window lacks.
        async with httpx.AsyncClient(timeout=30) as http:
            start = min(start, await channel_top(http, base, arguments.channel, tokens))
    subscriber = Subscriber(
        base,
        arguments.channel,
        tokens,
        transport=arguments.transport,
        start=start,
        on_gap=on_gap,
    )
    seen = 0
    async with subscriber:
        async for event in subscriber:
            if arguments.json:
                print(json.dumps(_event_json(event)), flush=True)
            else:
                payload = json.dumps(event.payload, ensure_ascii=False)
                print(
                    f"{event.created_date or '-'}  {event.replay_id}  {event.channel}  {payload}",
                    flush=True,
                )
            seen += 1
            if arguments.count is not None and seen >= arguments.count:
                break
    return 0


def run_stream_command(arguments: argparse.Namespace, environ: Mapping[str, str]) -> int:
    handler = {"token": _token, "publish": _publish, "tail": _tail}[arguments.command]
    try:
        return asyncio.run(handler(arguments, environ))
    except (CommandError, ReplaybusClientError) as error:
        print(f"replaybus: {error}", file=sys.stderr)
        return 1
    except httpx.HTTPError as error:
        print(f"replaybus: cannot reach the server: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
