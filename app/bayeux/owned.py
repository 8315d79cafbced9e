"""What a node keeps of the Bayeux sessions whose connects it serves: a held connect's wake-up
(`Hold`), and per session a mailbox that stays subscribed between connects (`Owned`), so a
connect on the node that served the previous one takes its events from the node's live
fan-out instead of reading the store. The engine stays the truth: a connect uses the mailbox
only when the session's stored positions are exactly where the mailbox took over
(`Owned.synced`); anything else (another node served it, a lost reply, an acknowledgement not
given, an overflow) reads the store as before.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import AsyncExitStack

from app.delivery import Delivery
from app.engine import Engine
from app.errors import EngineUnavailable
from app.hub import Hub, Mailbox, wake_waiter
from app.model import ChannelKey, Topic, Window

__all__ = ["Hold", "Owned", "Windows"]


class Hold:
    """A held connect, registered before its session changes so no signal about it is lost.
    `generation` is None until the connect's own change is stored; `newest` is the newest
    connect generation signalled meanwhile. One future (`waiter`) is what the connect waits
    on, whatever ends the wait."""

    __slots__ = ("generation", "newest", "reason", "turn", "waiter")

    def __init__(self) -> None:
        self.generation: int | None = None
        self.newest = -1
        self.reason: str | None = None  # "superseded" | "disconnected" | "resubscribed"
        self.waiter: asyncio.Future[None] | None = None
        self.turn = False  # holds one of the node's reply turns

    def ending(self) -> str | None:
        """Why the hold is to end (None: it is not); a call, as a signal can set it at any await."""
        return self.reason

    def end(self, reason: str) -> None:
        self.reason = reason
        wake_waiter(self.waiter)

    def connected(self, generation: int) -> None:
        """A connect of `generation` began (this one's, once known, or another's)."""
        if self.generation is None:
            self.newest = max(self.newest, generation)
        elif generation > self.generation:
            self.end("superseded")

    def started(self, generation: int) -> None:
        """This connect's change is stored, as `generation`."""
        self.generation = generation
        if self.newest > generation:
            self.end("superseded")


class Owned:
    """One session's live subscriptions on this node, kept between its connects.

    `synced` maps every channel of the session to the ReplayId after which all its events are
    in `mailbox` or `leftover` (events taken from the mailbox that the last reply had no room
    for); empty when that is not known. A connect that finds the session's positions equal to
    it serves the events from there; any other clears it while it works.

    Every connect of the session on this node shares `mailbox`, but what it holds belongs to
    the connect that took the state last (`taker`): only that one takes from it or settles,
    so a connect superseded while it waited can neither take events the newer one then never
    delivers nor leave positions behind them."""

    __slots__ = (
        "generation",
        "leftover",
        "mailbox",
        "opened",
        "replied",
        "stack",
        "subscriptions",
        "synced",
        "taker",
        "used",
    )

    def __init__(self, subscriptions: Mapping[str, int], capacity: int, max_bytes: int) -> None:
        self.subscriptions = dict(subscriptions)
        self.mailbox = Mailbox(capacity, max_bytes)
        self.stack = AsyncExitStack()
        self.synced: dict[str, int] = {}
        self.leftover: list[Delivery] = []
        self.generation = -1
        self.used = 0.0  # loop time of the last connect that used it; -inf: to be closed
        self.opened: asyncio.Future[None] | None = None  # while subscribing
        self.replied = 0.0  # loop time of the last reply with events stored
        self.taker: object = None  # the connect that took the state last (see `take`)

    async def open(self, hub: Hub, tenant: str) -> None:
        self.opened = asyncio.get_running_loop().create_future()
        try:
            for name in self.subscriptions:
                topic = Topic(tenant, name)
                await self.stack.enter_async_context(hub.subscribe(topic, self.mailbox))
        finally:
            wake_waiter(self.opened)
            self.opened = None

    def take(self, taker: object) -> tuple[dict[str, int], list[Delivery]]:
        """`synced` and `leftover`, cleared until the connect taking them (`taker`, which the
        mailbox's contents belong to from now on) stores its reply (see `settle`); nothing
        after an overflow or a loss (the mailbox starts over)."""
        self.taker = taker
        synced, leftover = self.synced, self.leftover
        self.synced, self.leftover = {}, []
        if self.mailbox.overflowed or self.mailbox.lost:
            self.mailbox.reset()
            return {}, []
        return synced, leftover

    def mine(self, taker: object) -> bool:
        """Whether the mailbox's contents still belong to `taker` (no connect took the state
        since)."""
        return self.taker is taker

    def settle(self, taker: object, synced: dict[str, int], leftover: list[Delivery]) -> None:
        """`taker`'s reply was stored with the session's positions at `synced`. Ignored when
        another connect took the state since: it reads the store, as it found `synced`
        empty, and may have taken from the mailbox already."""
        if self.taker is not taker:
            return
        self.synced = synced
        self.leftover = leftover
        floor = self.mailbox.floor
        floor.clear()
        floor.update(synced)

    async def close(self) -> None:
        self.synced = {}
        self.leftover = []
        await self.stack.aclose()


class Windows:
    """Per channel, the window this node read last, shared by every connect served from a
    mailbox: such a connect must still find out when retention (or a store loss) took events
    after its position, as one that reads the store does. A window read after an event
    arrived live shows every eviction its publish made (the store evicts, then announces), so
    a read covers the deliveries that had arrived when it began: `after(key, through)` reuses
    the last read when it covers `through`, joins one in flight that does, or reads. So a
    busy channel costs one read per round of replies on the node, not one per connect.
    Bounded to `max_entries` channels (the least recently used go)."""

    __slots__ = ("_engine", "_entries", "_max_entries", "_reading")

    def __init__(self, engine: Engine, max_entries: int = 10_000) -> None:
        self._engine = engine
        self._max_entries = max_entries
        self._entries: OrderedDict[ChannelKey, tuple[int, Window]] = OrderedDict()
        self._reading: dict[ChannelKey, tuple[int, asyncio.Future[Window]]] = {}

    async def after(self, key: ChannelKey, through: int) -> Window:
        """A window read after the delivery of `through` on `key` arrived."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] >= through:
            self._entries.move_to_end(key)
            return entry[1]
        reading = self._reading.get(key)
        if reading is not None and reading[0] >= through:
            return await asyncio.shield(reading[1])
        answer: asyncio.Future[Window] = asyncio.get_running_loop().create_future()
        self._reading[key] = (through, answer)
        try:
            window = await self._engine.window(key)
        except BaseException as error:
            if not isinstance(error, Exception):
                # The reading connect was cancelled: the others joined on its read fail as
                # on an engine that did not answer, not as if they were cancelled too.
                error = EngineUnavailable("a channel's window read was abandoned")
            answer.set_exception(error)
            answer.exception()  # retrieved here, whoever else waits on it
            raise
        finally:
            if self._reading.get(key, (0, None))[1] is answer:
                del self._reading[key]
        answer.set_result(window)
        held = self._entries.get(key)
        if held is None or held[0] <= through:
            self._entries[key] = (through, window)
            self._entries.move_to_end(key)
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return window
